"""Loop settings are declared once (config.LoopConfig); every command's flags, defaults and help derive
from that declaration, under one name per option (old spellings hidden but accepted)."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from deft_aoi.cli.mine_cmd import MINE_SETTINGS
from deft_aoi.cli.settings import given_settings, settings_command
from deft_aoi.config import SETTINGS, CacheDtype, Encoder, Strategy, choices, resolve_config

from .test_readme_commands import help_flags


def _declared_flags(names: Any = None) -> set[str]:
    flags: set[str] = set()
    for name in names if names is not None else SETTINGS:
        setting = SETTINGS[name]
        flags.add(setting.flag)
        if setting.off_flag:
            flags.add(setting.off_flag)
    return flags


@pytest.mark.parametrize("verb", ["run", "preflight"])
def test_every_setting_is_a_flag_of_run_and_preflight(verb: str) -> None:
    assert _declared_flags() <= help_flags(verb)


def test_mine_shares_the_loop_names_and_hides_the_old_ones() -> None:
    flags = help_flags("mine")
    assert _declared_flags(MINE_SETTINGS) <= flags
    assert not {"--topn", "--executor", "--index", "--memory", "--cache-dtype"} & flags


def test_one_name_per_option_across_commands() -> None:
    """No flag of one command is an alias of a different flag on another (the --top-k / --topn kind)."""
    aliases = {alias for s in SETTINGS.values() for alias in s.aliases}
    for verb in ("run", "preflight", "mine", "resume", "status", "report", "kpi", "init", "demo-data"):
        assert not aliases & help_flags(verb), verb


def _probe(names: tuple[str, ...], with_defaults: bool) -> typer.Typer:
    probe = typer.Typer()

    @probe.command(cls=settings_command(names, with_defaults=with_defaults))
    def show(ctx: typer.Context) -> None:
        typer.echo(repr(sorted(given_settings(ctx).items())))

    return probe


def test_old_spelling_is_an_alias_with_the_same_effect() -> None:
    probe = _probe(("top_k_per_target", "mining_index"), with_defaults=True)
    new = CliRunner().invoke(probe, ["--top-k", "3", "--mining-index", "exact"])
    old = CliRunner().invoke(probe, ["--topn", "3", "--index", "exact"])
    assert new.exit_code == 0 and new.output == old.output
    assert "('mining_index', 'exact'), ('top_k_per_target', 3)" in new.output
    default = CliRunner().invoke(probe, [])
    assert "('mining_index', 'auto'), ('top_k_per_target', 5)" in default.output  # the declared defaults


def test_not_given_is_none_where_provenance_matters() -> None:
    probe = _probe(("max_iterations", "allow_low_recall"), with_defaults=False)
    assert "('allow_low_recall', None), ('max_iterations', None)" in CliRunner().invoke(probe, []).output
    given = CliRunner().invoke(probe, ["--refuse-low-recall", "--max-iterations", "0"]).output
    assert "('allow_low_recall', False), ('max_iterations', 0)" in given


def test_config_owns_the_names_mining_registers() -> None:
    from deft_aoi.mining.cache import CACHE_DTYPES as MINING_CACHE_DTYPES
    from deft_aoi.mining.embedders import ENCODERS
    from deft_aoi.mining.strategy import STRATEGIES

    assert choices(Encoder) == ENCODERS
    assert choices(Strategy) == STRATEGIES
    assert choices(CacheDtype) == MINING_CACHE_DTYPES


def test_mining_defaults_are_the_declared_ones() -> None:
    """mining's one parameter object takes its defaults from the config's declaration: they cannot drift."""
    from deft_aoi.mining.embedders import resolve_encoder
    from deft_aoi.mining.params import MineConfig

    mine = MineConfig()
    config = resolve_config({}, {})
    # A run resolves `auto` for its backend (the default backend is local: the change-shape encoder).
    assert config.encoder.value == "auto" and config.backend.value == "local"
    resolved = resolve_encoder(config.encoder.value, config.backend.value)
    assert resolved == "shape"
    # ...and `auto` strategy: kpi on the builtin engine with the pool in memory (the defaults).
    assert config.strategy.value == "auto" and mine.selection_strategy == "knn"
    # ...whose class-balance cap is the config's declared default (2); `deft mine` alone keeps TAO's k-NN (None)
    assert config.max_pass_ratio.value == 2 and mine.max_pass_ratio is None
    assert MineConfig.from_loop_config(config) == mine.model_copy(
        update={"encoder": resolved, "strategy": "kpi", "max_pass_ratio": config.max_pass_ratio.value})
    # Every field named like a loop setting carries that setting's declared default (`auto` unresolved); the
    # class-balance cap is the one exception above: outside a run it stays off.
    shared = [name for name in MineConfig.model_fields if name in SETTINGS]
    assert {"top_k_per_target", "min_similarity", "mining_index", "mining_memory", "strategy"} <= set(shared)
    assert {name: getattr(mine, name) for name in shared if name != "max_pass_ratio"} == {
        name: getattr(config, name).value for name in shared if name != "max_pass_ratio"}

