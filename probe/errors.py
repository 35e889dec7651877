"""The only errors a user should see. The CLI prints them as one line and exits with code 2."""


class ProbeError(Exception):
    """A mistake of the user's (bad path, unknown name, corrupt file): said in one line."""


class DataError(ProbeError):
    """A dataset folder or file is missing, malformed or of another dataset."""


class ConfigError(ProbeError):
    """An unknown preset, architecture, class or option value, or options that contradict."""


class ModelFileError(ProbeError):
    """A trained-model folder is missing, corrupt, truncated or does not match the request."""


class TrainingError(ProbeError):
    """Training cannot go on (a NaN loss, say); the last good checkpoint is kept."""


class ProbeWarning(UserWarning):
    """Something odd that probe works around (a few unreadable images skipped, say): the CLI
    prints it as one line, `warning: ...`."""
