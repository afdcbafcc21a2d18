"""The one public face: `mura.load(...)` -> `Model`, which predicts, explains and writes DICOM results.

It sits above `pacs` (it writes DICOM results) and below `service` and `cli`.
"""
