"""ossencfs: an Alibaba Cloud OSS bucket as a folder, with SDK-compatible client-side encryption."""

__version__ = "0.1.0"
