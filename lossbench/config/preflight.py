"""The command line composed as `hydra.main` will compose it, before Hydra creates anything: the one module that
reads Hydra's internals (with fastconfig.py, which caches compositions), so that a bad command line is refused in
one `lossbench: error:` line with exit 2 and no directory made."""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from lossbench.config import _is_number, check_launcher, fastconfig, flatten, schema, validate
from lossbench.errors import ConfigError
from lossbench.values import show


def preflight(argv: list[str], task_function: Any, config_path: str, config_name: str, prefetch: bool = False) -> None:
    """Compose the configs of this command line the way `hydra.main` will, and validate them.

    Raises ConfigError (one line, naming the key) where Hydra would print a multi-line composition error and
    exit 1 (a wrong type, an unknown key or option, a malformed override), or where `validate` refuses a
    single run's config; nothing has been created yet. Hydra is set up with the helpers its own
    `_run_hydra` uses (hydra/_internal/utils.py), so the search path (-cp, -cd), config name (-cn) and
    plugins are the same; hydra-core is pinned to 1.3.

    A single run: its config, resolved, then `validate`. A sweep (-m, or a preset that sets
    hydra.mode=MULTIRUN such as hparams_search=optuna): the fixed overrides, then each value of each swept key
    (the command line's and the sweeper's params) once, and an interval's lower end for its type. Ranges are
    left to each job, where a refused job is recorded as failed and the sweep goes on.

    prefetch: also compose the configs `hydra.main` will ask for (the run's, or a sweep's master and jobs:
    fastconfig.prefetch), for lossbench.config.ahead's child to hand over.
    """
    config_path = str(config_path)  # a Path (lossbench.config.CONFIGS) is taken too
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import (
        create_automatic_config_search_path,
        detect_calling_file_or_module_from_task_function,
        detect_task_name,
        get_args_parser,
    )
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.info or args.shell_completion or args.experimental_rerun:
        return
    for override in args.overrides:  # Python refuses to read integers this long, in a traceback
        if (digits := max((len(m) for m in re.findall(r"\d+", override)), default=0)) > 1000:
            raise ConfigError(f"{override.split('=')[0]}: the value has a number of {digits} digits; no lossbench "
                              "key takes one (integers are at most 2**63 - 1, 19 digits).")
    calling_file, calling_module = detect_calling_file_or_module_from_task_function(task_function)
    search_path = create_automatic_config_search_path(calling_file, calling_module, args.config_path or config_path)
    if args.config_dir is not None:
        config_dir = os.path.abspath(args.config_dir)
        if not os.path.isdir(config_dir):
            raise ConfigError(f"--config-dir {args.config_dir}: no such directory.")
        search_path.prepend(provider="command-line", path=f"file://{config_dir}",
                            anchor=SearchPathQuery(provider="schema"))
    try:
        hydra = Hydra.create_main_hydra2(task_name=detect_task_name(calling_file, calling_module),
                                         config_search_path=search_path)
        try:
            _compose_command_line(hydra, args, args.config_name or config_name, prefetch)
        finally:
            GlobalHydra.instance().clear()
    except (HydraException, OmegaConfBaseException) as e:
        raise composition_error(e) from None


def _compose_command_line(hydra: Any, args: Any, name: str, prefetch: bool) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep
    from hydra.types import RunMode

    def compose(overrides: list[str]) -> DictConfig:
        cfg = hydra.compose_config(name, overrides, run_mode=RunMode.RUN)
        for key in cfg:  # resolve the interpolations (of a preset's study.* knobs, say) where types are checked
            if key != "hydra" and isinstance(node := cfg[key], (DictConfig, ListConfig)):
                OmegaConf.to_container(node, resolve=True)
        return cfg

    parser = OverridesParser.create(config_loader=hydra.config_loader)
    given = parser.parse_overrides(args.overrides)
    fixed = [o for o in given if not o.is_sweep_override()]
    adds = [o for o in given if (o.is_add() or o.is_force_add()) and not o.key_or_group.startswith("hydra.")
            and not hydra.config_loader.repository.group_exists(o.key_or_group.replace(".", "/"))]
    if adds:  # `+key=value` / `++key=value` add keys: each must be one that some lossbench schema knows
        _check_added_keys(compose([o.input_line for o in fixed if o not in adds]), [o.key_or_group for o in adds])
    cfg = compose([o.input_line for o in fixed])
    if args.multirun or cfg.hydra.mode == RunMode.MULTIRUN:
        check_launcher(cfg.hydra.launcher)
    if prefetch and not args.cfg:
        fastconfig.prefetch(hydra.config_loader, name, args.overrides, args.multirun)
    if args.cfg or not (args.multirun or cfg.hydra.mode == RunMode.MULTIRUN):
        if len(fixed) < len(given):
            compose(args.overrides)  # Hydra's own message: a sweep needs --multirun
        if not args.cfg:
            validate(cfg)
        return
    params = cfg.hydra.sweeper.get("params") or {}
    swept = {o.get_key_element(): o for o in parser.parse_overrides([f"{k}={v}" for k, v in params.items()])}
    swept.update({o.get_key_element(): o for o in given})  # the command line wins, as in Hydra's sweepers
    base = [o.input_line for o in swept.values() if not o.is_sweep_override()]
    values = {}
    for key, o in swept.items():
        if o.is_discrete_sweep():
            values[key] = list(o.sweep_string_iterator())
        elif isinstance(o.value(), IntervalSweep):
            values[key] = [str(o.value().start)]
    # A launcher that composes its jobs in this process (basic, stacked) composes each combination of the swept
    # config groups; those are composed here, once (lossbench.config.fastconfig keeps them), the rest of the keys'
    # values each once with them. Others (joblib, submitit) compose in their workers: each value once here.
    target = str(cfg.hydra.launcher.get("_target_") or "")
    groups = [k for k in values if hydra.config_loader.repository.group_exists(k.lstrip("+~"))] \
        if target.endswith(("BasicLauncher", "StackedLauncher")) else []
    firsts = {k: v[0] for k, v in values.items()}
    runs = [{**firsts, **dict(zip(groups, combo, strict=True))}
            for combo in itertools.product(*(values[k] for k in groups))]
    runs += [{**firsts, key: value} for key in values if key not in groups for value in values[key][1:]]
    for run in runs:
        compose([*(b for b in base if b.split("=", 1)[0] not in run), *(f"{k}={v}" for k, v in run.items())])


def _check_added_keys(base: DictConfig, keys: list[str]) -> None:
    """Refuse a key added with + or ++ that the chosen options' schemas (or the config as composed without it)
    do not have, naming the nearest valid key: an unknown key would otherwise be carried along and ignored."""
    import dataclasses
    import difflib

    for key in keys:
        group = key.split(".")[0]
        if group in schema.SCHEMAS and dataclasses.is_dataclass(node_type := OmegaConf.get_type(base[group])):
            valid = {f"{group}.{f.name}" for f in dataclasses.fields(node_type)}
            where = f"{group}={OmegaConf.select(base, f'hydra.runtime.choices.{group}')}"
        else:
            valid = set(flatten(OmegaConf.to_container(base, resolve=False))) - {"hydra"}
            valid = {k for k in valid if not k.startswith("hydra.")} | set(base.keys()) - {"hydra"}
            where = "the config"
        if key not in valid:
            near = difflib.get_close_matches(key, sorted(valid), n=1) or \
                difflib.get_close_matches(key, sorted(k for *_, k, _ in schema.leaves()), n=1)
            raise ConfigError(f"{key} is not a key of {where}" + (f" (did you mean {near[0]}?)" if near else "") +
                              ". A key added with + or ++ must be one that lossbench reads; see "
                              "docs/configuration.md for the keys.")


def composition_error(e: Exception) -> ConfigError:
    """Hydra's or OmegaConf's composition error as one line that names the key."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    cause = e if isinstance(e, OmegaConfBaseException) else (e.__cause__ or e.__context__)
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        return ConfigError(_omegaconf_message(cause))
    if isinstance(e, MissingConfigException) and e.options is not None:
        what = str(e).splitlines()[0].split(": ", 1)[-1]  # "In 'config': Could not find 'loss/focal'"
        group = (e.missing_cfg_file or "").rpartition("/")[0]
        return ConfigError(f"{what}. Available options in '{group}': {', '.join(e.options)}.")
    lines = [line.strip().rstrip(".:") for line in str(e).splitlines()]
    lines = [line for line in lines if line and not line.startswith(("See https://", "Config search path", "provider="))]
    if isinstance(e, OverrideParseException):
        lines.insert(0, f"Cannot parse the override {e.override!r}")
    return ConfigError("; ".join(lines) + ".")


def _omegaconf_message(e: Any) -> str:
    import dataclasses
    import difflib

    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    key, parent_key = e.full_key, e.full_key.rpartition(".")[0]
    first = (e.msg or type(e).__name__).splitlines()[0]
    if isinstance(e, (ConfigKeyError, ConfigAttributeError)) and " not in " in first:
        leaf = str(e.key)
        valid = sorted(str(k) for k in e.parent_node.keys()) if isinstance(e.parent_node, DictConfig) else []
        near = difflib.get_close_matches(leaf, valid, n=1)
        return (f"{key} is not a key of {parent_key or 'the config'}"
                + (f" (did you mean {parent_key}.{near[0]}?)" if near else "")
                + (f". Valid keys: {', '.join(valid)}." if valid else "."))
    if isinstance(e, ValidationError):
        expected = None
        if isinstance(e.key, int) and e.ref_type is not None:  # an entry of a typed list
            expected = schema.describe(next(iter(getattr(e.ref_type, "__args__", ())), Any))
        elif dataclasses.is_dataclass(e.object_type):
            expected = schema.describe(schema.field_types(e.object_type).get(e.key, Any))
        if expected and expected != "a value":
            value = e.value
            message = f"{key} must be {expected}, got {show(value)}."
            if expected.startswith("a list of") and _is_number(value):
                message += f" For a list of one, write {key}=[{show(value)}]."
            return message
    return f"{key}: {first}"


