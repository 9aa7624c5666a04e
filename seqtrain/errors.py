"""Exception types for the user's mistakes: app.main prints them as one line and exits with status 2."""


class SeqtrainError(Exception):
    """Base of all errors caused by the user's config or data, not by a bug in seqtrain."""


class ConfigError(SeqtrainError):
    """A config key is missing, unknown, of the wrong type or has an invalid value."""


class NetworkError(ConfigError):
    """The layer dict cannot be built into a network (names `network.layers.<layer>` and the key)."""

    def __init__(self, layer: str, message: str):
        super().__init__(f"network.layers.{layer}: {message}")
        self.layer = layer


class DataError(SeqtrainError):
    """A data file is missing or broken, or a sequence cannot be used (names the file or sequence tag)."""


class CheckpointError(SeqtrainError):
    """A checkpoint file is missing, truncated or not a seqtrain checkpoint."""


class TrainingError(SeqtrainError):
    """Training cannot go on, e.g. the loss became NaN or infinite."""
