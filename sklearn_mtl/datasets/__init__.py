"""Data generators and loaders of data that ships in packages."""

from ._patients import make_patient_records
from ._penguins import load_penguins
from ._synthetic import make_multitask

__all__ = ["make_patient_records", "load_penguins", "make_multitask"]
