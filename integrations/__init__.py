"""One thin module per outside system; each hides its SDK behind a small class."""
