"""YAML layering against a typed schema: schema defaults ← base file(s) ← experiment file ← CLI dotlist.

An experiment file may name its parent with `base: <path relative to the file>`; the chain is merged root
first. Any key not in the schema is an error that names the key and the file it came from.
"""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """One-line error naming the file/key at fault."""


def _file_chain(path: Path) -> list[tuple[Path, DictConfig]]:
    """[(root file, its yaml), ..., (path, its yaml)] following `base:` links."""
    chain, seen = [], set()
    while path is not None:
        path = path.resolve()
        if path in seen:
            raise ConfigError(f"{path}: circular `base:` chain")
        seen.add(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            node = OmegaConf.load(path)
        except Exception as err:  # yaml syntax errors come in several types
            raise ConfigError(f"{path}: cannot parse YAML ({str(err).splitlines()[0]})") from None
        base = node.pop("base", None)
        chain.append((path, node))
        path = (path.parent / base) if base else None
    return chain[::-1]


def _merge(cfg: DictConfig, layer: DictConfig, origin: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, layer)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ConfigError(f"{origin}: bad key {key!r}: {str(err).splitlines()[0]}") from None


def load_layered(schema: type, path: str | Path | None, overrides: list[str] = ()):
    """Layer schema defaults ← files ← `key=value` overrides; returns an instance of the schema dataclass."""
    cfg = OmegaConf.structured(schema)
    if path is not None:
        for file, node in _file_chain(Path(path)):
            cfg = _merge(cfg, node, str(file))
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"command line: override {bad[0]!r} is not key=value")
        cfg = _merge(cfg, OmegaConf.from_dotlist(list(overrides)), "command line")
    return OmegaConf.to_object(cfg)
