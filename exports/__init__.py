"""The accountant's month: the documents of a calendar month turned into files (the
workbook, the CSV, the FEC-layout journal, the zip of PDFs). ``exports.build`` is the way
in; the writers import their heavy libraries only when they run."""
