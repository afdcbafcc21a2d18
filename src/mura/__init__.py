"""mura: fracture / abnormality classifiers for musculoskeletal radiographs."""

__version__ = "0.1.0"
