"""Monthly exports for the accountant (a later issue: .xlsx, .csv, .zip, FEC)."""
