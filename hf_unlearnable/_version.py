"""The library's version: a leaf module, so that modules recording it need not import the package above them."""

__version__ = "0.1.0"
