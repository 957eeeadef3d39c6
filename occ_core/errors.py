"""Error types shared by occ_core."""


class OccDataError(ValueError):
    """Bad input data. The message names the file (or field) and what was expected."""
