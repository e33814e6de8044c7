"""Settings: a TOML file plus WATCHERD_* environment variables, validated by pydantic.

Precedence: environment, then the file, then the defaults below. Every default is
documented in config.example.toml; `tests/test_config.py` keeps the two in step.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from watcherd import hooks
from watcherd.locations import (
    BUSY_TIMEOUT_SECONDS,
    ENV_PREFIX,
    LEASE_SECONDS,
    ConfigError,
    Queue,
    config_path,
    database_setting,
    default_database,
    default_log_dir,
    default_model_cache_dir,
    default_worker_name,
    expand,
    folder_name,
    is_postgres,
    read_file,
    redact,
)

__all__ = ["ConfigError", "Inbox", "Profile", "Settings", "config_path", "load_settings"]

MEDIA_EXTENSIONS = [
    "aac", "aif", "aiff", "amr", "caf", "flac", "m4a", "m4b", "mka", "mp2", "mp3", "oga",
    "ogg", "opus", "wav", "wma", "weba", "3gp", "avi", "m4v", "mkv", "mov", "mp4", "mpeg",
    "mpg", "ts", "webm", "wmv",
]  # fmt: skip
FORMATS = ("txt", "srt", "vtt", "json")  # the default; "md" and "rttm" are asked for
Format = Literal["txt", "srt", "vtt", "json", "md", "rttm"]
Task = Literal["transcribe", "translate"]
Priority = Literal["low", "normal", "high"]  # store.PRIORITIES gives their order
# "plain": movie.srt; "language": movie.en.srt (ISO 639-1); "language3": movie.eng.srt
SubtitleNames = Literal["plain", "language", "language3"]
TxtLayout = Literal["segments", "paragraphs"]


def _command(value):
    """A hook's command line: a string is split as a shell would split it, but no shell
    runs it; a list is taken as it is. A leading ~ in any argument is the home folder.
    Empty: no hook (an inbox turns the global one off this way)."""
    if isinstance(value, str):
        value = shlex.split(value)  # unbalanced quotes: a ValueError, named by pydantic
    if not isinstance(value, (list, tuple)) or not all(isinstance(a, str) for a in value):
        raise ValueError("a command line: a string, or a list of strings")
    return tuple(os.path.expanduser(a) if a.startswith("~") else a for a in value)


Command = Annotated[tuple[str, ...], BeforeValidator(_command)]


def _database(value) -> Path | str:
    """A SQLite file's path, or a postgresql:// URL (without a password)."""
    if not isinstance(value, (str, Path)) or not str(value):
        raise ValueError("a path, or a postgresql:// URL")
    return database_setting(value)


class Inbox(BaseModel):
    """A watched folder and what its files are transcribed with; unset keys inherit the
    global settings. In TOML either a plain path or a `[[inboxes]]` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    # Its stable name where machines share a queue: the job `media/a.wav` is the same file
    # on every machine, whichever folder each mounts the share at. Default: the folder's.
    name: str = Field("", pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$")
    model: str | None = None
    language: str | None = None  # "auto": detect, even when the global setting fixes one
    task: Task | None = None
    initial_prompt: str | None = None
    formats: list[Format] | None = None
    word_timestamps: bool | None = None
    # e.g. 16 for a Chinese inbox, whose characters count two columns each
    subtitle_max_line_chars: int | None = Field(None, ge=10)
    subtitle_max_lines: int | None = Field(None, ge=1)
    subtitle_max_cue_seconds: float | None = Field(None, gt=0)
    subtitle_highlight_words: bool | None = None
    subtitle_names: SubtitleNames | None = None
    skip_subtitled: bool | None = None
    txt_layout: TxtLayout | None = None
    md_timestamps: bool | None = None
    md_dir: str | None = None  # "": beside the source, even when the global one is set
    notify: bool | None = None
    on_done: Command | None = None  # "": no hook, even when the global one is set
    on_failed: Command | None = None
    hook_timeout_seconds: float | None = Field(None, gt=0)
    diarize: bool | None = None
    speakers: int | None = Field(None, ge=1)
    min_speakers: int | None = Field(None, ge=1)
    max_speakers: int | None = Field(None, ge=1)
    speaker_names: dict[str, Path] | None = None
    # Where its files stand in the queue; not a transcription setting, so not in Profile.
    priority: Priority = "normal"

    @model_validator(mode="before")
    @classmethod
    def _from_path(cls, value):
        return {"path": value} if isinstance(value, (str, Path)) else value

    @field_validator("path", mode="after")
    @classmethod
    def _expand_path(cls, value: Path) -> Path:
        return expand(value)

    @model_validator(mode="after")
    def _default_name(self) -> Inbox:
        if not self.name:  # frozen: set once, here
            object.__setattr__(self, "name", folder_name(self.path))
        return self

    _expand_voices = field_validator("speaker_names", mode="after")(
        classmethod(lambda cls, value: _expand_voices(value))
    )


def _expand_voices(value: dict[str, Path] | None) -> dict[str, Path] | None:
    if value is None:
        return None
    for name in value:
        if not name.strip():
            raise ValueError("a speaker name is empty")
    return {name.strip(): expand(path) for name, path in value.items()}


@dataclass(frozen=True)
class Profile:
    """Everything that decides how one file is transcribed and written."""

    model: str
    language: str | None  # None: detect
    task: str
    initial_prompt: str | None
    formats: tuple[str, ...]
    word_timestamps: bool
    subtitle_max_line_chars: int
    subtitle_max_lines: int
    subtitle_max_cue_seconds: float
    subtitle_highlight_words: bool
    subtitle_names: str
    skip_subtitled: bool
    txt_layout: str
    md_timestamps: bool
    md_dir: Path | None  # None: beside the source
    notify: bool
    on_done: tuple[str, ...]  # empty: no hook
    on_failed: tuple[str, ...]
    hook_timeout_seconds: float
    diarize: bool = False
    speakers: int | None = None  # exactly this many (wins over the range)
    min_speakers: int | None = None
    max_speakers: int | None = None
    speaker_names: tuple[tuple[str, Path], ...] = ()  # (name, reference clip)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    # Watching
    inboxes: list[Inbox] = Field(default_factory=lambda: [Inbox(path="~/Transcribe/inbox")])
    recursive: bool = False
    quiet_seconds: float = Field(3.0, ge=0)
    scan_interval_seconds: float = Field(300.0, gt=0)
    media_extensions: list[str] = Field(default_factory=lambda: list(MEDIA_EXTENSIONS))

    # Queue
    database: Annotated[Path | str, PlainValidator(_database)] = Field(
        default_factory=default_database
    )
    max_attempts: int = Field(3, ge=1)
    poison_after_crashes: int = Field(3, ge=1)
    retry_backoff_seconds: float = Field(30.0, ge=0)
    busy_timeout_seconds: float = Field(BUSY_TIMEOUT_SECONDS, gt=0)
    # Free the models after this long with nothing queued; 0 keeps them loaded.
    idle_unload_seconds: float = Field(600.0, ge=0)
    # Several machines, one queue: this daemon's name, and how long a job it claimed stays
    # its own without a heartbeat (then it goes back to the queue, for any machine).
    worker_name: str | None = Field(None, min_length=1)  # None: the host name

    lease_seconds: float = Field(LEASE_SECONDS, gt=0)

    # Engine
    model: str = "tiny.en"
    vad: bool = True
    batch_size: int = Field(0, ge=0)
    dtype: Literal["auto", "float32", "float16"] = "auto"
    language: str | None = None
    task: Task = "transcribe"
    initial_prompt: str | None = None
    word_timestamps: bool = False
    model_cache_dir: Path = Field(default_factory=default_model_cache_dir)

    # Outputs
    formats: list[Format] = Field(default_factory=lambda: list(FORMATS))
    subtitle_max_line_chars: int = Field(42, ge=10)
    subtitle_max_lines: int = Field(2, ge=1)
    subtitle_max_cue_seconds: float = Field(7.0, gt=0)
    subtitle_highlight_words: bool = False
    subtitle_names: SubtitleNames = "plain"
    skip_subtitled: bool = False
    txt_layout: TxtLayout = "segments"
    md_timestamps: bool = False
    md_dir: Path | None = None

    # After each job
    notify: bool = False
    on_done: Command | None = None
    on_failed: Command | None = None
    hook_timeout_seconds: float = Field(60.0, gt=0)

    # Speakers
    diarize: bool = False
    speakers: int | None = Field(None, ge=1)
    min_speakers: int | None = Field(None, ge=1)
    max_speakers: int | None = Field(None, ge=1)
    speaker_names: dict[str, Path] | None = None

    # Logs
    log_dir: Path = Field(default_factory=default_log_dir)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_max_bytes: int = Field(5_000_000, gt=0)
    log_backups: int = Field(3, ge=0)

    @field_validator("model_cache_dir", "log_dir", "md_dir", mode="after")
    @classmethod
    def _expand_paths(cls, value: Path | None) -> Path | None:
        return None if value is None else expand(value)

    @field_validator("md_dir", mode="before")
    @classmethod
    def _no_md_dir(cls, value):
        return None if value == "" else value  # "": beside the source, as unset

    @field_validator("speaker_names", mode="after")
    @classmethod
    def _expand_voices(cls, value: dict[str, Path] | None) -> dict[str, Path] | None:
        return _expand_voices(value)

    @model_validator(mode="after")
    def _speakers_consistent(self) -> Settings:
        """Per profile: a range that is one, rttm only where there are speakers, and the
        reference clips of named speakers."""
        for inbox in [None, *self.inboxes]:
            profile = self.profile(inbox.path / "file" if inbox else None)
            where = f" (inbox {inbox.path})" if inbox else ""
            low, high = profile.min_speakers, profile.max_speakers
            if low is not None and high is not None and low > high:
                raise ValueError(f"min_speakers {low} is above max_speakers {high}{where}")
            if "rttm" in profile.formats and not profile.diarize:
                raise ValueError(f"the rttm format needs diarize = true{where}")
            for name, clip in profile.speaker_names:
                if not clip.is_file():
                    raise ValueError(
                        f"speaker_names: no reference clip for {name!r} at {clip}{where}"
                    )
        return self

    @property
    def diarizes(self) -> bool:
        """Whether some file may be diarized (the global setting or an inbox's)."""
        return self.diarize or any(inbox.diarize for inbox in self.inboxes)

    @field_validator("media_extensions", mode="after")
    @classmethod
    def _normalise_extensions(cls, value: list[str]) -> list[str]:
        return sorted({e.lower().lstrip(".") for e in value if e.strip(". ")})

    @field_validator("inboxes", mode="after")
    @classmethod
    def _at_least_one_inbox(cls, value: list[Inbox]) -> list[Inbox]:
        if not value:
            raise ValueError("at least one inbox is needed")
        if len({inbox.path for inbox in value}) != len(value):
            raise ValueError("an inbox is listed twice")
        return value

    @model_validator(mode="after")
    def _inbox_names_differ(self) -> Settings:
        """A queue that machines share tells inboxes apart by name (alone, a SQLite queue
        tells them apart by path, so two folders both called `inbox` are fine there)."""
        names = [inbox.name for inbox in self.inboxes]
        if is_postgres(self.database) and (
            twice := sorted({n for n in names if names.count(n) > 1})
        ):
            raise ValueError(
                f"two inboxes are named {twice[0]!r}: give each its own `name` (a queue "
                "that machines share tells inboxes apart by name)"
            )
        return self

    @property
    def queue(self) -> Queue:
        return Queue(self.database, self.busy_timeout_seconds, self.worker)

    @property
    def worker(self) -> str:
        """This daemon's name in a shared queue: `worker_name`, else the host name."""
        return self.worker_name or default_worker_name()

    @property
    def inbox_paths(self) -> list[Path]:
        return [inbox.path for inbox in self.inboxes]

    def inbox_of(self, path: Path | str) -> Inbox | None:
        """The inbox a file is in (the innermost, when inboxes nest)."""
        folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
        inside = [
            inbox
            for inbox in self.inboxes
            if (root := os.path.realpath(inbox.path)) == folder
            or folder.startswith(root.rstrip(os.sep) + os.sep)
        ]
        return max(inside, key=lambda inbox: len(str(inbox.path)), default=None)

    def priority_of(self, path: Path | str) -> Priority:
        """The queue priority of a file: its inbox's, else normal."""
        inbox = self.inbox_of(path)
        return inbox.priority if inbox is not None else "normal"

    def profile(self, path: Path | str | None = None) -> Profile:
        """How the file at `path` is transcribed: its inbox's overrides, else the globals."""
        inbox = self.inbox_of(path) if path is not None else None

        def pick(key: str):
            value = getattr(inbox, key) if inbox is not None else None
            return getattr(self, key) if value is None else value

        language = pick("language")
        md_dir = pick("md_dir")
        return Profile(
            model=pick("model"),
            language=None if language in (None, "auto") else language,
            task=pick("task"),
            initial_prompt=pick("initial_prompt"),
            formats=tuple(pick("formats")),
            # highlighted subtitles are made of word timings; speakers change between words
            word_timestamps=pick("word_timestamps")
            or pick("subtitle_highlight_words")
            or pick("diarize"),
            subtitle_max_line_chars=pick("subtitle_max_line_chars"),
            subtitle_max_lines=pick("subtitle_max_lines"),
            subtitle_max_cue_seconds=pick("subtitle_max_cue_seconds"),
            subtitle_highlight_words=pick("subtitle_highlight_words"),
            subtitle_names=pick("subtitle_names"),
            skip_subtitled=pick("skip_subtitled"),
            txt_layout=pick("txt_layout"),
            md_timestamps=pick("md_timestamps"),
            md_dir=expand(md_dir) if md_dir else None,
            notify=pick("notify"),
            on_done=pick("on_done") or (),
            on_failed=pick("on_failed") or (),
            hook_timeout_seconds=pick("hook_timeout_seconds"),
            diarize=pick("diarize"),
            speakers=pick("speakers"),
            min_speakers=pick("min_speakers"),
            max_speakers=pick("max_speakers"),
            speaker_names=tuple((pick("speaker_names") or {}).items()),
        )

    @property
    def notifies(self) -> bool:
        """Whether any file may post a notification: the global setting or an inbox's."""
        return self.notify or any(inbox.notify for inbox in self.inboxes)

    @property
    def models(self) -> list[str]:
        """Every model some inbox uses, the default first."""
        return list(dict.fromkeys([self.model, *(i.model for i in self.inboxes if i.model)]))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init kwargs; the environment overrides them.
        return (_EnvironmentOutsideHooks(settings_cls, env_settings), init_settings)


class _EnvironmentOutsideHooks(PydanticBaseSettingsSource):
    """The environment's settings; but in a `watcherd` command that a hook runs,
    WATCHERD_LANGUAGE is the language of the hook's job, not the `language` setting."""

    def __init__(self, settings_cls: type[BaseSettings], environment: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self.environment = environment

    def get_field_value(self, field, field_name: str):
        return self.environment.get_field_value(field, field_name)

    def __call__(self) -> dict:
        values = self.environment()
        if hooks.ATTEMPT in os.environ:
            values.pop("language", None)
        return values


def load_settings(path: Path | str | None = None) -> Settings:
    """Read and validate the settings; raise ConfigError naming what is wrong and where.
    The file is read by `locations.read_file` rather than pydantic-settings' TOML source:
    `status` reads the same file without pydantic, by the same function."""
    file, values = read_file(path)
    unknown = sorted(
        k
        for k in os.environ
        if k.startswith(ENV_PREFIX)
        and k[len(ENV_PREFIX) :].lower() not in Settings.model_fields
        and k != f"{ENV_PREFIX}CONFIG"
        and not hooks.is_job_variable(k)  # a `watcherd` command run from a hook
    )
    if unknown:
        raise ConfigError(f"environment: unknown setting(s) {', '.join(unknown)}")
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, file, values)) from None
    if settings.diarizes:
        from watcherd import diarize  # light: finds the model package without importing it

        try:
            diarize.available()
        except diarize.DiarizationUnavailable as exc:
            raise ConfigError(f"{file}: diarize = true, but {exc}") from None
    return settings


def _explain(exc: ValidationError, file: Path, values: dict) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"]) or "?"
        top = str(error["loc"][0]) if error["loc"] else ""
        env_name = f"{ENV_PREFIX}{top.upper()}"
        if error["type"] == "extra_forbidden":
            lines.append(f"{file}: unknown key {key!r}")
            continue
        source = f"environment variable {env_name}" if env_name in os.environ else str(file)
        value = os.environ.get(env_name, values.get(top, error.get("input")))
        if top == "database" and isinstance(value, str):
            value = redact(value)
        lines.append(f"{source}: invalid value {value!r} for {key!r}: {error['msg']}")
    return "\n".join(lines)
