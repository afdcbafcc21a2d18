"""Decoding DICOM radiographs: `read` (data set -> display pixels + body part) and `sniff` (byte-level
checks that need no parsing). Making and exchanging DICOM objects is `mura.pacs`, not here."""
