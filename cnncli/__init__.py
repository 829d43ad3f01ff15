"""cnncli: configuration-driven CNN experiments on a from-scratch NumPy engine."""

__version__ = "0.1.0"
