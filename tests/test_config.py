"""Settings: TOML plus WATCHERD_* variables, and errors that name the key, value and file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from watcherd import locations
from watcherd.config import ConfigError, Settings, load_settings
from watcherd.locations import tomllib

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for key in list(__import__("os").environ):
        if key.startswith("WATCHERD_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)


def test_defaults_without_a_file(tmp_path):
    settings = load_settings()
    assert settings.inbox_paths == [tmp_path / "home" / "Transcribe" / "inbox"]
    assert settings.model == "tiny.en"
    assert settings.formats == ["txt", "srt", "vtt", "json"]
    assert not settings.database.is_relative_to(settings.inbox_paths[0])


def test_file_values_are_read_and_paths_expanded(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('inboxes = ["~/a", "/b"]\nrecursive = true\nformats = ["txt"]\n')
    settings = load_settings(config)
    assert settings.inbox_paths == [tmp_path / "home" / "a", Path("/b")]
    assert settings.recursive and settings.formats == ["txt"]


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text("quiet_seconds = 9\n")
    monkeypatch.setenv("WATCHERD_QUIET_SECONDS", "1.5")
    assert load_settings(config).quiet_seconds == 1.5


def test_default_file_location_is_used(tmp_path):
    default = tmp_path / "home" / ".config" / "watcherd" / "config.toml"
    default.parent.mkdir(parents=True)
    default.write_text('model = "base"\n')
    assert load_settings().model == "base"


def test_unknown_key_names_the_key_and_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("quiet_secs = 3\n")
    with pytest.raises(ConfigError, match=rf"{config}: unknown key 'quiet_secs'"):
        load_settings(config)


def test_wrong_value_names_key_value_and_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('formats = ["txt", "docx"]\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    message = str(info.value)
    assert str(config) in message and "formats" in message and "docx" in message


def test_wrong_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("WATCHERD_MAX_ATTEMPTS", "zero")
    with pytest.raises(ConfigError, match="WATCHERD_MAX_ATTEMPTS.*'zero'.*max_attempts"):
        load_settings()


def test_unknown_environment_variable_is_an_error(monkeypatch):
    monkeypatch.setenv("WATCHERD_MODLE", "base")
    with pytest.raises(ConfigError, match="WATCHERD_MODLE"):
        load_settings()


def test_invalid_toml_names_the_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("model = \n")
    with pytest.raises(ConfigError, match=rf"{config}: not valid TOML"):
        load_settings(config)


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_example_config_documents_every_key_with_its_default():
    text = (ROOT / "config.example.toml").read_text()
    example = tomllib.loads(text)
    commented = set(re.findall(r"^# (\w+) = ", text, flags=re.MULTILINE))
    assert set(example) | commented == set(Settings.model_fields)
    assert all(getattr(Settings(), key) is None for key in commented)
    defaults = Settings()
    for key, value in example.items():
        if key in {"inboxes", "database", "model_cache_dir", "log_dir"}:
            continue  # per-user paths: the example shows one platform's value
        assert getattr(defaults, key) == value, key


def test_example_config_loads_as_is():
    assert load_settings(ROOT / "config.example.toml").model == "tiny.en"


# --- per-inbox settings ------------------------------------------------------------------

PER_INBOX = """
model = "tiny.en"
language = "en"
formats = ["txt", "srt"]

[[inboxes]]
path = "~/Transcribe/inbox"

[[inboxes]]
path = "~/Transcribe/french"
model = "base"
language = "fr"
initial_prompt = "Assemblée nationale"
formats = ["srt"]

[[inboxes]]
path = "~/Transcribe/anything"
model = "base"
language = "auto"
task = "translate"
word_timestamps = true
"""


def test_an_inbox_table_overrides_the_global_settings_for_its_files(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(PER_INBOX)
    settings = load_settings(config)
    home = tmp_path / "home" / "Transcribe"
    default = settings.profile(home / "inbox" / "talk.m4a")
    assert (default.model, default.language, default.task) == ("tiny.en", "en", "transcribe")
    assert default.formats == ("txt", "srt") and default.initial_prompt is None
    french = settings.profile(home / "french" / "débat.m4a")
    assert (french.model, french.language, french.formats) == ("base", "fr", ("srt",))
    assert french.initial_prompt == "Assemblée nationale" and french.task == "transcribe"
    anything = settings.profile(home / "anything" / "sub" / "x.mp3")
    assert anything.language is None, '"auto" detects even though the global fixes "en"'
    assert anything.task == "translate" and anything.word_timestamps
    assert settings.profile(tmp_path / "elsewhere.mp3") == default
    assert settings.models == ["tiny.en", "base"]


def test_plain_paths_and_tables_mix_in_one_list(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('inboxes = ["~/a", { path = "~/b", language = "de" }]\n')
    settings = load_settings(config)
    assert settings.inbox_paths == [tmp_path / "home" / "a", tmp_path / "home" / "b"]
    assert settings.profile(tmp_path / "home" / "b" / "x.wav").language == "de"
    assert settings.profile(tmp_path / "home" / "a" / "x.wav").language is None


def test_nested_inboxes_use_the_innermost(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('inboxes = ["/in", { path = "/in/fr", language = "fr" }]\n')
    settings = load_settings(config)
    assert settings.profile("/in/fr/deep/x.wav").language == "fr"
    assert settings.profile("/in/x.wav").language is None


def test_an_unknown_key_in_an_inbox_table_is_named(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[[inboxes]]\npath = "/in"\nlangauge = "fr"\n')
    with pytest.raises(ConfigError, match=rf"{config}: unknown key 'inboxes.0.langauge'"):
        load_settings(config)


def test_highlighted_subtitles_turn_word_timestamps_on(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("subtitle_highlight_words = true\n")
    assert load_settings(config).profile("/x.wav").word_timestamps


def test_an_inbox_may_set_its_own_subtitle_layout(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        "subtitle_max_line_chars = 37\n"
        '[[inboxes]]\npath = "/in"\n'
        '[[inboxes]]\npath = "/zh"\nsubtitle_max_line_chars = 16\nsubtitle_highlight_words = true\n'
    )
    settings = load_settings(config)
    chinese, default = settings.profile("/zh/a.wav"), settings.profile("/in/a.wav")
    assert (chinese.subtitle_max_line_chars, default.subtitle_max_line_chars) == (16, 37)
    assert chinese.subtitle_max_lines == default.subtitle_max_lines == 2
    assert chinese.subtitle_highlight_words and chinese.word_timestamps
    assert not default.subtitle_highlight_words and not default.word_timestamps
    config.write_text('[[inboxes]]\npath = "/in"\nsubtitle_max_line_chars = 5\n')
    with pytest.raises(ConfigError, match="subtitle_max_line_chars"):
        load_settings(config)


@pytest.mark.parametrize(
    ("text", "env"),
    [
        ("", {}),
        ('database = "~/queue/jobs.db"\nbusy_timeout_seconds = 5\n', {}),
        ('database = "relative/jobs.db"\n', {}),
        ('database = "~/queue/jobs.db"\n',
         {"WATCHERD_DATABASE": "/tmp/env/jobs.db", "WATCHERD_BUSY_TIMEOUT_SECONDS": "7.5"}),
    ],
)  # fmt: skip
def test_status_finds_the_queue_where_the_daemon_does(tmp_path, monkeypatch, text, env):
    """`status` reads the queue's location without pydantic (`locations.queue`): by the
    same rules, with the same defaults, as the settings the daemon runs with."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = tmp_path / "config.toml"
    config.write_text(text)
    settings = load_settings(config)
    queue = locations.queue(config)
    assert queue == settings.queue
    assert queue.database.is_absolute() and queue.lock.name == "jobs.db.lock"


@pytest.mark.parametrize(
    ("text", "key"),
    [("database = 5\n", "database"), ("busy_timeout_seconds = 0\n", "busy_timeout_seconds"),
     ('busy_timeout_seconds = "soon"\n', "busy_timeout_seconds")],
)  # fmt: skip
def test_a_bad_queue_setting_is_named_by_both_readers(tmp_path, text, key):
    config = tmp_path / "config.toml"
    config.write_text(text)
    for read in (load_settings, locations.queue):
        with pytest.raises(ConfigError, match=rf"{config}: invalid value .* for '{key}'"):
            read(config)


def test_an_inbox_may_set_what_follows_its_jobs_and_turn_global_ones_off(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        'notify = true\non_done = "~/bin/file-it"\nmd_dir = "~/Vault"\nformats = ["md"]\n'
        'subtitle_names = "language"\n'
        '[[inboxes]]\npath = "/in"\n'
        '[[inboxes]]\npath = "/movies"\nskip_subtitled = true\nsubtitle_names = "language3"\n'
        'txt_layout = "paragraphs"\nmd_timestamps = true\nhook_timeout_seconds = 5\n'
        '[[inboxes]]\npath = "/quiet"\nnotify = false\non_done = ""\nmd_dir = ""\n'
    )
    settings = load_settings(config)
    home = tmp_path / "home"
    default, movies, quiet = (settings.profile(f"/{n}/x.mkv") for n in ("in", "movies", "quiet"))
    assert default.notify and default.on_done == (f"{home}/bin/file-it",)
    assert default.md_dir == home / "Vault" and default.on_failed == ()
    assert (default.subtitle_names, default.skip_subtitled, default.txt_layout) == (
        "language", False, "segments"
    )  # fmt: skip
    assert (movies.subtitle_names, movies.skip_subtitled, movies.txt_layout) == (
        "language3", True, "paragraphs"
    )  # fmt: skip
    assert movies.md_timestamps and movies.hook_timeout_seconds == 5
    assert default.hook_timeout_seconds == 60
    assert not quiet.notify and quiet.on_done == () and quiet.md_dir is None
    assert settings.notifies


def test_hooks_and_names_from_the_environment(monkeypatch):
    monkeypatch.setenv("WATCHERD_ON_DONE", "/bin/hook --to 'My Vault'")
    monkeypatch.setenv("WATCHERD_ON_FAILED", '["/bin/tell", "a b"]')
    monkeypatch.setenv("WATCHERD_SUBTITLE_NAMES", "language3")
    settings = load_settings()
    assert settings.on_done == ("/bin/hook", "--to", "My Vault")
    assert settings.on_failed == ("/bin/tell", "a b")
    assert settings.subtitle_names == "language3" and not settings.notifies
    monkeypatch.setenv("WATCHERD_SUBTITLE_NAMES", "iso")
    with pytest.raises(ConfigError, match="WATCHERD_SUBTITLE_NAMES.*'iso'.*subtitle_names"):
        load_settings()


def test_an_inbox_priority_and_the_idle_unload_are_checked(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        f'inboxes = ["{tmp_path}/a", {{ path = "{tmp_path}/b", priority = "high" }}]\n'
        "idle_unload_seconds = 0\n"
    )
    settings = load_settings(config)
    assert settings.idle_unload_seconds == 0
    assert settings.priority_of(tmp_path / "b" / "x.mp3") == "high"
    assert settings.priority_of(tmp_path / "a" / "x.mp3") == "normal"
    assert settings.priority_of(tmp_path / "elsewhere.mp3") == "normal"
    config.write_text(f'inboxes = [{{ path = "{tmp_path}/b", priority = "urgent" }}]\n')
    with pytest.raises(ConfigError, match=r"'inboxes.0.priority': Input should be 'low'"):
        load_settings(config)
    config.write_text("idle_unload_seconds = -1\n")
    with pytest.raises(ConfigError, match=r"-1 for 'idle_unload_seconds'"):
        load_settings(config)
