"""Each distinct set of config-group choices composed once per process; a sweep job composed once.

Hydra composes every job of a sweep from scratch (the defaults tree, every YAML file, every structured-config
merge), twice: the basic sweeper's `validate_batch_is_legal` composes each job, then the launcher composes it
again, and `lossbench.config.preflight.preflight` composes the command line before both. `install()` replaces Hydra's
`ConfigLoaderImpl.load_configuration` and `load_sweep_config` (hydra-core is pinned to 1.3) by:

- `load_configuration` (run modes RUN and MULTIRUN): Hydra's own steps, split where the command line's value
  overrides come in. The part before them -- the defaults list and the merge of its configs, which depend only on
  the config name, the search path, the config-group overrides and the run mode -- is composed once per distinct
  set of group choices and kept; each call takes a copy and runs Hydra's remaining steps on it (the value
  overrides, the `hydra.overrides` / `hydra.runtime` / `hydra.job` records), in Hydra's order. The result equals
  Hydra's composition (tests/test_fastconfig.py compares every job and sweep master of every preset and random
  override sets). `prefetch` makes the calls `hydra.main` will make ahead of time (lossbench/config/ahead.py runs
  it in a child process while the command imports torch); each result is handed to its one call.
- `load_sweep_config`: the config composed for a job is kept until the same job is asked for again (the
  launcher after the sweeper's check) and then handed over, so that no job is composed twice.
- OmegaConf parses an interpolation (`${study.steps}`, Hydra's `${hydra.job.num}_...`) with its ANTLR grammar,
  in pure Python, each time the value is read (~0.3 ms; a job reads a dozen or two): `install()` keeps each
  string's parse tree (`_parse`), which OmegaConf's resolver only reads.
- Hydra's `run_job` (every launcher's per-job step) copies the config with `copy.deepcopy` and writes the three
  `.hydra/` records with PyYAML's pure-Python emitter (~30 ms a job); `install()` hands it a pickle round trip
  for the copies and libyaml's emitter, with OmegaConf's own representers, for the records (~10 ms; the strings
  libyaml writes otherwise, such as Hydra's help templates, keep PyYAML's text: `to_yaml`). The files
  are byte for byte Hydra's (tests/test_fastconfig.py). `HydraConfig.set_config` (two to four times a job)
  copies the hydra node the same way.

LOSSBENCH_FASTCONFIG=0 in the environment leaves Hydra's loader as it is (to compare timings or records), and
composes nothing ahead. Anything else -- another run mode, an override of `hydra.searchpath` (it changes where
configs are found) -- goes through Hydra's own code unchanged.
"""

from __future__ import annotations

import copy
import functools
import os
import pickle
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

_templates: dict[tuple, tuple] = {}  # group choices -> (composed, choices, sources, the config files' versions)
_handed: dict[Any, Any] = {}  # (master config, job overrides) -> the job's config, until asked again
_files: dict[tuple, Any] = {}  # (search path, config path) -> the ConfigResult the repository loaded, untouched
_paths: dict[tuple, tuple] = {}  # (repository id, config path) -> (repository, the file it names or None)
_prefetched: dict[tuple, tuple] = {}  # load_configuration's arguments -> (its result, the files' versions), for one call
_prefetching = False  # prefetch() is composing: keep each result in _prefetched
_PREFETCH_JOBS = 256  # at most this many jobs of a sweep prefetched
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
_original: dict[str, Any] = {}
_dumper: list[type] = []  # the libyaml dumper, made once
_fragments: dict[tuple, str | None] = {}  # (place, string) -> PyYAML's text of the string there (to_yaml)
SLOT = "lossbench-yaml-slot"  # where libyaml leaves a string for PyYAML's text of it
stats = {"composed": 0, "copied": 0, "handed_over": 0, "hydra": 0, "adopted": 0, "prefetched": 0}  # what each call did (tests, bench)


def install() -> None:
    """Route Hydra's config loader through this module (idempotent)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core import utils as hydra_utils
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import base

    if _original or os.environ.get("LOSSBENCH_FASTCONFIG") == "0":  # 0: Hydra's own loader (to compare)
        return
    _original["parse"], base.parse = base.parse, functools.lru_cache(maxsize=4096)(base.parse)
    _original["load_configuration"] = ConfigLoaderImpl.load_configuration
    _original["load_sweep_config"] = ConfigLoaderImpl.load_sweep_config
    _original["get_group_options"] = ConfigLoaderImpl.get_group_options
    _original["utils.copy"], _original["utils._save_config"] = hydra_utils.copy, hydra_utils._save_config
    hydra_utils.copy, hydra_utils._save_config = _FastCopy, _save_config  # names run_job looks up when it runs
    _original["set_config"], HydraConfig.set_config = HydraConfig.set_config, set_config  # type: ignore[method-assign]
    ConfigLoaderImpl.load_configuration = load_configuration  # type: ignore[method-assign]
    ConfigLoaderImpl.load_sweep_config = load_sweep_config  # type: ignore[method-assign]
    ConfigLoaderImpl.get_group_options = get_group_options  # type: ignore[method-assign]


def uninstall() -> None:
    """Hydra's own loader back (tests compare the two)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core import utils as hydra_utils
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import base

    if _original:
        base.parse = _original.pop("parse")
        hydra_utils.copy, hydra_utils._save_config = _original.pop("utils.copy"), _original.pop("utils._save_config")
        HydraConfig.set_config = _original.pop("set_config")  # type: ignore[method-assign]
        ConfigLoaderImpl.load_configuration = _original.pop("load_configuration")  # type: ignore[method-assign]
        ConfigLoaderImpl.load_sweep_config = _original.pop("load_sweep_config")  # type: ignore[method-assign]
        ConfigLoaderImpl.get_group_options = _original.pop("get_group_options")  # type: ignore[method-assign]
    clear()


def clear() -> None:
    _templates.clear()
    _prefetched.clear()
    _files.clear()
    _paths.clear()
    _handed.clear()


def export() -> tuple[dict, dict]:
    """The compositions kept and prefetched, as plain data (pickle): what lossbench.config.ahead hands from the
    process that composed them to the one that trains."""
    return dict(_templates), dict(_prefetched)


def adopt(made: tuple[dict, dict]) -> bool:
    """Keep compositions another process made (export()), those of files that are still as they were; a key
    already kept here stays as it is. True if every file they were composed from is as it was."""
    templates, prefetched = made
    current = True
    for key, value in templates.items():
        if not _unchanged(value[3]):
            current = False
        elif key not in _templates:
            _templates[key] = value
            stats["adopted"] += 1
    for key, value in prefetched.items():
        if not _unchanged(value[1]):
            current = False
        elif key not in _prefetched:
            _prefetched[key] = value
    return current


def prefetch(loader: Any, config_name: str | None, overrides: list[str], multirun: bool) -> None:
    """Compose the configs Hydra's `hydra.main` will ask for, by the same calls in the same order (its get_mode,
    then run or multirun; for the basic sweeper, each job as ConfigLoaderImpl.load_sweep_config composes it), and
    keep each result for that one call: the process that runs the command (lossbench.config.ahead hands them
    over) then composes none of them."""
    global _prefetching
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    _prefetching = True
    try:
        try:  # hydra._internal.hydra.Hydra.get_mode, then _run_app (hydra/_internal/utils.py)
            mode = loader.load_configuration(config_name, overrides, run_mode=RunMode.MULTIRUN,
                                             validate_sweep_overrides=False).hydra.mode
        except Exception:  # noqa: BLE001 (Hydra's get_mode: no mode)
            mode = None
        overrides = list(overrides)
        if mode is None or (multirun and mode == RunMode.RUN):
            mode = RunMode.MULTIRUN if multirun else RunMode.RUN
            overrides.append(f"hydra.mode={mode.name}")
        master = loader.load_configuration(config_name, overrides, run_mode=mode)
        sweeper = master.hydra.sweeper
        if mode != RunMode.MULTIRUN or str(sweeper.get("_target_")) != BASIC_SWEEPER or \
                not str(master.hydra.launcher.get("_target_")).endswith(("BasicLauncher", "StackedLauncher")):
            return  # another sweeper chooses its jobs as it goes; another launcher composes them elsewhere
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        lines = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
        lines += list(master.hydra.overrides.task)  # BasicSweeper.sweep: its params, then the arguments
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(lines)
        jobs = [job for batch in BasicSweeper.split_arguments(parsed, sweeper.get("max_batch_size"))
                for job in batch]
        for job in jobs[:_PREFETCH_JOBS]:
            loader.load_configuration(master.hydra.job.config_name, [*master.hydra.overrides.hydra, *job],
                                      run_mode=RunMode.RUN)
    finally:
        _prefetching = False


def load_sweep_config(self: Any, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
    """Hydra's load_sweep_config; a job's config is composed once and handed to its second caller."""
    if _handed.get("master") is not master_config:  # another sweep: what an earlier one left is dropped
        _handed.clear()
        _handed["master"] = master_config  # held, so that its id names no other config meanwhile
    key = (id(master_config), tuple(sweep_overrides))
    if (cfg := _handed.pop(key, None)) is not None:  # type: ignore[call-overload]
        stats["handed_over"] += 1
        return cfg
    cfg = _original["load_sweep_config"](self, master_config, sweep_overrides)  # calls load_configuration below
    _handed[key] = cfg  # type: ignore[index]
    return cfg


def get_group_options(self: Any, group_name: str, results_filter: Any = "config", config_name: str | None = None,
                      overrides: list[str] | None = None) -> list[str]:
    """Hydra's get_group_options (`--help` lists every group's options: 180 calls), without deep-copying the
    whole repository for each call."""
    from hydra.core.object_type import ObjectType
    from hydra.core.override_parser.overrides_parser import OverridesParser

    results_filter = ObjectType.CONFIG if results_filter == "config" else results_filter
    if any(o.split("=", 1)[0].lstrip("+~").startswith("hydra.searchpath") for o in overrides or []):
        return _original["get_group_options"](self, group_name, results_filter, config_name, overrides)
    parsed = OverridesParser.create().parse_overrides(overrides=list(overrides or []))
    return _caching_repo(self, config_name, parsed).get_group_options(group_name, results_filter)


def load_configuration(self: Any, config_name: str | None, overrides: list[str], run_mode: Any,
                       from_shell: bool = True, validate_sweep_overrides: bool = True) -> DictConfig:
    """Hydra's ConfigLoaderImpl.load_configuration, the composition of each set of group choices kept."""
    from hydra.errors import ConfigCompositionException
    from hydra.types import RunMode
    from omegaconf.errors import OmegaConfBaseException

    if run_mode not in (RunMode.RUN, RunMode.MULTIRUN) or any(
            o.split("=", 1)[0].lstrip("+~").startswith("hydra.searchpath") for o in overrides):
        stats["hydra"] += 1
        return _original["load_configuration"](self, config_name, overrides, run_mode, from_shell,
                                               validate_sweep_overrides)
    key = (_search_path(self), config_name, tuple(overrides), run_mode, from_shell, validate_sweep_overrides)
    if (made := _prefetched.pop(key, None)) is not None and _unchanged(made[1]):
        stats["prefetched"] += 1
        return made[0]
    try:
        cfg, versions = _load(self, config_name, overrides, run_mode, from_shell, validate_sweep_overrides)
        if _prefetching:
            _prefetched[key] = (_copy(cfg), versions)
        return cfg
    except OmegaConfBaseException as e:
        import sys

        raise ConfigCompositionException().with_traceback(sys.exc_info()[2]) from e


def _structure(self: Any, parsed: list) -> tuple[list, tuple]:
    """The overrides that choose configs (Hydra's rule, defaults_list.Overrides) and a key naming that set.

    Choices of distinct groups do not depend on their order (Hydra keeps them in a dict); appended groups
    (`+group=option`) are merged in the order given, and so keep it.
    """
    groups = [o for o in parsed if not o.is_sweep_override() and not isinstance(o.value(), dict)
              and self.repository.group_exists(o.key_or_group)]
    plain = [o.input_line for o in groups if not (o.is_add() or o.is_delete())]
    keys = [o.get_key_element() for o in groups if not (o.is_add() or o.is_delete())]
    if len(set(keys)) == len(keys):
        plain = sorted(plain)
    return groups, (tuple(plain), tuple(o.input_line for o in groups if o.is_add() or o.is_delete()))


def _stamp(repo: Any, config_path: str) -> tuple | None:
    """A config file's version (its path, mtime, size); None for a ConfigStore node or package resource."""
    from hydra.core.object_type import ObjectType

    known = _paths.get((id(repo), config_path))
    if known is None or known[0] is not repo:  # which file a config path names: looked up once per repository
        source = repo._find_object_source(config_path, ObjectType.CONFIG)
        known = _paths[id(repo), config_path] = (repo, os.path.join(
            source.path, source._normalize_file_name(config_path)) if source is not None and source.scheme() == "file"
            else None)  # the repository is held with it, so that its id names no other meanwhile
    return None if known[1] is None else _version(known[1])


def _unchanged(versions: list[tuple]) -> bool:
    """Every file of these versions (see _version) is still as it was."""
    return all(_version(v[0]) == v for v in versions)


def _version(path: str) -> tuple | None:
    """A file's version: (path, mtime, size); None if it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return path, st.st_mtime_ns, st.st_size


def _caching_repo(self: Any, config_name: str | None, parsed: list) -> Any:
    """Hydra's per-composition repository (_parse_overrides_and_create_caching_repo), its files read once per
    process: each config (parsed YAML or ConfigStore node, with its header and defaults list) is kept as loaded
    and every composition gets a copy (a composition takes the loaded nodes over, so none is shared)."""
    from hydra._internal.config_repository import CachingConfigRepository

    where = _search_path(self)

    class Repo(CachingConfigRepository):
        def __init__(self, delegate: Any) -> None:  # Hydra deep-copies the delegate here, for the case below
            self.delegate, self.cache = delegate, {}
            self.loaded: list[tuple] = []  # the version of each config file loaded (see _version)

        def initialize_sources(self, config_search_path: Any) -> None:  # a primary config's hydra.searchpath
            self.delegate = copy.deepcopy(self.delegate)
            self.delegate.initialize_sources(config_search_path)

        def load_config(self, config_path: str) -> Any:
            if (key := f"config_path={config_path}") not in self.cache:
                version = (where, config_path, _stamp(self.delegate, config_path))
                if version not in _files:
                    _files[version] = self.delegate.load_config(config_path=config_path)
                if version[2] is not None:
                    self.loaded.append(version[2])
                self.cache[key] = _copy(_files[version])
            return self.cache[key]

    repo = Repo(self.repository)
    self._process_config_searchpath(config_name, parsed, repo)
    return repo


def _copy(obj: Any) -> Any:
    """A deep copy: a pickle round trip, 3x faster than copy.deepcopy for an OmegaConf tree (both keep its node
    types, flags and interpolations; tests/test_fastconfig.py compares the results)."""
    return pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def copy_config(obj: Any) -> Any:
    """copy.deepcopy(obj), by a pickle round trip where that is the same copy: a root DictConfig, whose children
    deepcopy copies detached and parents to the copy (HydraConfig's masked copy has a child whose parent is
    the job's config: it is parented to the root for the round trip, so that only this tree is copied)."""
    content = obj.__dict__.get("_content") if isinstance(obj, DictConfig) else None
    if not isinstance(content, dict) or obj._get_parent() is not None:
        return copy.deepcopy(obj)
    parents = [(v, v.__dict__["_parent"]) for v in content.values()]
    try:
        for v, _ in parents:
            v.__dict__["_parent"] = obj
        return _copy(obj)
    finally:
        for v, parent in parents:
            v.__dict__["_parent"] = parent


def set_config(self: Any, cfg: DictConfig) -> None:
    """HydraConfig.set_config (Hydra 1.3): the hydra node's masked copy, whose node is parented to the job's
    config, with the node copied by a pickle round trip (deepcopy's copy: the node detached meanwhile)."""
    from hydra.conf import HydraConf
    from omegaconf import flag_override

    OmegaConf.set_readonly(cfg.hydra, True)
    hydra_node_type = OmegaConf.get_type(cfg, "hydra")
    assert hydra_node_type is not None and issubclass(hydra_node_type, HydraConf)
    node = cfg._get_node("hydra")
    parent = node.__dict__["_parent"]
    node.__dict__["_parent"] = None
    try:
        copied = _copy(node)
    finally:
        node.__dict__["_parent"] = parent
    masked = DictConfig(content={})
    with flag_override(masked, "no_deepcopy_set_nodes", True):
        masked["hydra"] = copied
    self.cfg = masked
    self.cfg.hydra._set_parent(cfg)


class _FastCopy:
    """The `copy` module as Hydra's run_job sees it."""

    copy, deepcopy = staticmethod(copy.copy), staticmethod(copy_config)


def _plain(text: str) -> bool:
    """Printable ASCII: a string libyaml emits as PyYAML's emitter does (the two escape and fold other text
    differently)."""
    return text.isascii() and text.isprintable()


def _odd_strings(obj: Any, path: tuple = ()) -> list[tuple[tuple, str]] | None:
    """(place, value) of every string of a container that is not _plain, in document order; a place is the
    path of (container type, key or index) down to it. None if a key is not _plain (such a record goes through
    PyYAML's emitter as a whole)."""
    if isinstance(obj, str):
        return [] if _plain(obj) else [(path, obj)]
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    found: list[tuple[tuple, str]] = []
    for k, v in items:
        inner = None if isinstance(k, str) and not _plain(k) else _odd_strings(v, (*path, (type(obj), k)))
        if inner is None:
            return None
        found += inner
    return found


def _put(obj: Any, place: tuple, value: Any) -> None:
    for _, k in place[:-1]:
        obj = obj[k]
    obj[place[-1][1]] = value


def _alone(place: tuple, value: Any) -> Any:
    """A document holding only `value`, at `place`: the same indentation and column as in the record."""
    for kind, k in reversed(place):
        value = {k: value} if kind is dict else [value]
    return value


def to_yaml(cfg: Any) -> str:
    """OmegaConf.to_yaml(cfg), emitted by libyaml where PyYAML has it (3-4x faster, the same text).

    libyaml and PyYAML's emitter write plain ASCII alike, not other strings (Hydra's help templates hold
    newlines): libyaml emits each of those as a placeholder, replaced by PyYAML's text for it, which depends
    only on the string and its place (the keys above it set its indentation and column) and is kept per
    (place, string)."""
    import yaml
    from omegaconf._utils import get_omega_conf_dumper

    dumper = get_omega_conf_dumper()
    container = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    dump = functools.partial(yaml.dump, default_flow_style=False, allow_unicode=True, sort_keys=False)
    odd = _odd_strings(container) if getattr(yaml, "__with_libyaml__", False) else None
    if odd is None:
        return dump(container, Dumper=dumper)
    if not _dumper:
        class Dumper(yaml.CDumper):  # libyaml's emitter with the representers of OmegaConf's dumper
            yaml_representers = dict(dumper.yaml_representers)
            yaml_multi_representers = dict(dumper.yaml_multi_representers)
        _dumper.append(Dumper)
    texts = []
    for place, value in odd:
        if (place, value) not in _fragments:  # PyYAML's text of the string, framed as libyaml frames the slot
            if len(_fragments) >= 4096:
                _fragments.clear()
            before, _, after = dump(_alone(place, SLOT), Dumper=_dumper[0]).partition(SLOT)
            alone = dump(_alone(place, value), Dumper=dumper)
            fits = alone.startswith(before) and alone.endswith(after) and len(alone) >= len(before) + len(after)
            _fragments[place, value] = alone[len(before):len(alone) - len(after)] if fits else None
        texts.append(_fragments[place, value])
        _put(container, place, SLOT)
    parts = dump(container, Dumper=_dumper[0]).split(SLOT)
    if None in texts or len(parts) != len(texts) + 1:  # a string PyYAML frames otherwise, or SLOT in the text
        for place, value in odd:
            _put(container, place, value)
        return dump(container, Dumper=dumper)
    return "".join(p + t for p, t in zip(parts, [*texts, ""], strict=True))


def _save_config(cfg: DictConfig, filename: str, output_dir: Any) -> None:
    """hydra.core.utils._save_config, through to_yaml."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(str(output_dir / filename), "w", encoding="utf-8") as file:
        file.write(to_yaml(cfg))


def _search_path(self: Any) -> tuple:
    return tuple((p.provider, p.path) for p in self.config_search_path.get_path())


def _load(self: Any, config_name: str | None, overrides: list[str], run_mode: Any, from_shell: bool,
          validate_sweep_overrides: bool) -> tuple[DictConfig, list]:
    """The composed config, and the versions of the files it was composed from."""
    # The steps of hydra._internal.config_loader_impl.ConfigLoaderImpl._load_configuration_impl (1.3), in order.
    from hydra import __version__, version
    from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
    from hydra._internal.defaults_list import create_defaults_list
    from hydra.conf import ConfigSourceInfo
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.utils import JobRuntime
    from hydra.types import RunMode

    self.ensure_main_config_source_available()
    parsed = OverridesParser.create().parse_overrides(overrides=overrides)
    if validate_sweep_overrides:
        self.validate_sweep_overrides_legal(overrides=parsed, run_mode=run_mode, from_shell=from_shell)
    groups, structure = _structure(self, parsed)
    multirun = run_mode != RunMode.RUN  # Hydra composes a sweep's master config without a missing group's choice
    key = (_search_path(self), config_name, structure, multirun)
    if key in _templates and not _unchanged(_templates[key][3]):
        del _templates[key]  # a config file it was composed from has changed since
    if key not in _templates:
        caching_repo = _caching_repo(self, config_name, parsed)
        defaults_list = create_defaults_list(repo=caching_repo, config_name=config_name, overrides_list=groups,
                                             prepend_hydra=True, skip_missing=multirun)
        cfg = self._compose_config_from_defaults_list(defaults=defaults_list.defaults, repo=caching_repo)
        OmegaConf.set_struct(cfg, True)
        OmegaConf.set_readonly(cfg.hydra, False)
        sources = [ConfigSourceInfo(path=x.path, schema=x.scheme(), provider=x.provider)
                   for x in caching_repo.get_sources()]
        if len(_templates) >= 512:
            _templates.clear()
        _templates[key] = (cfg, dict(defaults_list.overrides.known_choices), sources, caching_repo.loaded)
        stats["composed"] += 1
    template, known_choices, sources, versions = _templates[key]
    cfg = _copy(template)
    stats["copied"] += 1
    group_ids = {id(o) for o in groups}
    config_overrides = [o for o in parsed if id(o) not in group_ids and not o.is_sweep_override()]
    ConfigLoaderImpl._apply_overrides_to_config(config_overrides, cfg)
    app_overrides = []
    for override in parsed:
        if override.is_hydra_override():
            cfg.hydra.overrides.hydra.append(override.input_line)
        else:
            cfg.hydra.overrides.task.append(override.input_line)
            app_overrides.append(override)
    with open_dict(cfg.hydra):
        cfg.hydra.runtime.choices.update(known_choices)
        for k in cfg.hydra.job.env_copy:
            cfg.hydra.job.env_set[k] = os.environ[k]
    cfg.hydra.runtime.version = __version__
    cfg.hydra.runtime.version_base = version.getbase()
    cfg.hydra.runtime.cwd = os.getcwd()
    cfg.hydra.runtime.config_sources = copy.deepcopy(sources)
    if "name" not in cfg.hydra.job:
        cfg.hydra.job.name = JobRuntime().get("name")
    cfg.hydra.job.override_dirname = get_overrides_dirname(
        overrides=app_overrides, kv_sep=cfg.hydra.job.config.override_dirname.kv_sep,
        item_sep=cfg.hydra.job.config.override_dirname.item_sep,
        exclude_keys=cfg.hydra.job.config.override_dirname.exclude_keys)
    cfg.hydra.job.config_name = config_name
    return cfg, versions

