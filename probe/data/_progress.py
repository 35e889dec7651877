"""The data stage's progress bar is the project's one (probe.progress)."""
from probe.progress import progress  # noqa: F401
