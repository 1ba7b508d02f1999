"""Bar data: load any known bar file format, resample, validate.

Import cost stays low: Great Expectations is imported only when :func:`validate_bars` first runs.
"""

from services.bars.loader import LoadedBars, load_bars, parse_bars
from services.bars.resample import resample_bars
from services.bars.sizes import infer_bar_size
from services.bars.validation import BarIssue, BarValidationError, ValidationResult, validate_bars

__all__ = [
    "BarIssue",
    "BarValidationError",
    "LoadedBars",
    "ValidationResult",
    "infer_bar_size",
    "load_bars",
    "parse_bars",
    "resample_bars",
    "validate_bars",
]
