"""The async file handler inside the stdlib's own configuration machinery."""

from __future__ import annotations

import logging
import logging.config
from pathlib import Path

from aiologship import AsyncFileHandler, LogManager
from tests.conftest import read_lines
from tests.logging.test_delivery import _run_script


def test_dictconfig_factory_form(tmp_path: Path) -> None:
    path = tmp_path / "dict.log"
    with LogManager() as lm:
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "formatters": {"plain": {"format": "%(name)s|%(message)s"}},
                "handlers": {
                    "file": {
                        "()": "aiologship.AsyncFileHandler",
                        "filename": str(path),
                        "formatter": "plain",
                        "manager": lm,
                    }
                },
                "loggers": {"dc": {"handlers": ["file"], "level": "INFO"}},
            }
        )
        handler = logging.getLogger("dc").handlers[0]
        assert isinstance(handler, AsyncFileHandler)
        for i in range(100):
            logging.getLogger("dc").info("m%d", i)
    assert read_lines(path) == [f"dc|m{i}" for i in range(100)]


def test_dictconfig_at_exit_drains_without_close(tmp_path: Path) -> None:
    path = tmp_path / "exit.log"
    _run_script(
        f"""
import logging, logging.config
logging.config.dictConfig({{
    "version": 1,
    "handlers": {{"f": {{"()": "aiologship.AsyncFileHandler", "filename": {str(path)!r},
                         "fmt": "%(message)s", "rotation": "10 MB"}}}},
    "root": {{"handlers": ["f"], "level": "INFO"}},
}})
for i in range(20000):
    logging.getLogger("x").info("%d", i)
""",
        tmp_path,
    )
    assert read_lines(path) == [str(i) for i in range(20000)]


def test_our_sinks_survive_a_later_dictconfig(tmp_path: Path) -> None:
    """uvicorn-style reconfiguration must not disable or close our handlers."""
    path = tmp_path / "survive.log"
    with LogManager() as lm:
        log = lm.get_logger("svc")
        log.add(path, fmt="%(message)s")
        log.info("before")
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {"null": {"class": "logging.NullHandler"}},
                "loggers": {"uvicorn": {"handlers": ["null"], "level": "INFO"}},
            }
        )
        log.info("after")
    assert read_lines(path) == ["before", "after"]


def test_dictconfig_from_a_yaml_file_drains_at_exit(tmp_path: Path) -> None:
    """The uvicorn --log-config style: a YAML file fed to dictConfig."""
    path = tmp_path / "yaml.log"
    config = tmp_path / "logging.yaml"
    config.write_text(
        "version: 1\n"
        "disable_existing_loggers: false\n"
        "formatters:\n  plain: {format: '%(levelname)s %(message)s'}\n"
        "handlers:\n"
        "  file:\n"
        "    (): aiologship.AsyncFileHandler\n"
        f"    filename: {path}\n"
        "    formatter: plain\n"
        "root: {handlers: [file], level: INFO}\n",
        encoding="utf-8",
    )
    _run_script(
        f"""
import logging, logging.config, yaml
with open({str(config)!r}) as f:
    logging.config.dictConfig(yaml.safe_load(f))
for i in range(10000):
    logging.getLogger("y").info("%d", i)
""",
        tmp_path,
    )
    assert read_lines(path) == [f"INFO {i}" for i in range(10000)]
