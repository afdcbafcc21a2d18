"""Decoding DICOM radiographs: `read` (data set -> display pixels + body part), `display` (the display
pipeline, by blocks of rows), `codestream` (the size a compressed frame declares, for the pixel budget)
and `sniff` (byte-level checks that need no parsing). Making and exchanging DICOM objects is `mura.pacs`,
not here."""
