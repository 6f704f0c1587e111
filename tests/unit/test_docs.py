"""The front page and the docs as a user meets them: the site builds with --strict, every code block
a user would copy is run by a test (or says why not), the tables written from the code are current,
settings read the same in the docs as in --help, and the chart names only what the registry has."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from rlrings import algorithms
from rlrings.ops import docs
from rlrings.ops.cli import SERVICES
from rlrings.rpc.config import load_config
from tests.helpers import PAGES, ROOT, snippet, snippets

OUTPUT_LANGUAGES = ("text", "mermaid")
"""Blocks that show what a program printed or a diagram: nothing to copy."""
NOT_RUN = re.compile(r"^<!-- not run: .{12,} -->$")


def fences(text: str):
    """(line number, language, the line before) of every opening fence."""
    lines, inside = text.split("\n"), False
    for number, line in enumerate(lines):
        if line.startswith("```"):
            if not inside:
                yield number + 1, line[3:].strip(), lines[number - 1] if number else ""
            inside = not inside


def test_every_code_block_a_user_would_copy_is_run_or_says_why_not():
    unmarked = [
        f"{page.relative_to(ROOT)}:{number} ({language or 'no language'})"
        for page in PAGES
        for number, language, before in fences(page.read_text())
        if language not in OUTPUT_LANGUAGES and not (before.startswith("<!-- snippet: ") or NOT_RUN.match(before))
    ]
    assert not unmarked, (
        f"mark these <!-- snippet: NAME --> and run them in a test, or <!-- not run: why -->: {unmarked}"
    )


def test_every_snippet_is_run_by_a_test_and_a_name_marks_one_text():
    tests = "\n".join(path.read_text() for path in (ROOT / "tests").rglob("test_*.py"))
    found = snippets()
    assert len(found) >= 15
    for name, places in found.items():
        assert re.search(rf"snippet\(\s*\"{name}\"", tests), f"no test runs the snippet {name!r}"
        assert len({text for _, text in places}) == 1, f"{name!r} marks different texts: {[str(p) for p, _ in places]}"


def test_the_site_builds_strictly(tmp_path):
    """`make docs`' build: a broken link, a missing page, an anchor that is gone or a bad marker fails."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=240, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    page = (tmp_path / "site" / "algorithms" / "appo" / "index.html").read_text()
    assert "<code>clip</code>" in page and "<!-- rlrings:" not in page  # the settings table is filled in
    assert "ReplayClient" in (tmp_path / "site" / "clients" / "python" / "index.html").read_text()


def test_the_readme_table_and_the_values_comments_are_current():
    result = subprocess.run([sys.executable, "-m", "rlrings.ops.docs", "--check"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_a_marker_becomes_the_settings_table_that_rlrings_algorithms_prints():
    rows = docs.render("<!-- rlrings:settings algorithm=ppo -->").splitlines()
    assert rows[0] == "| setting | type | default | description |"
    (epochs,) = [row for row in rows if row.startswith("| `epochs` |")]
    printed = subprocess.run([sys.executable, "-m", "rlrings.ops.cli", "algorithms", "ppo"], capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert printed.returncode == 0 and "--algorithm.epochs" in printed.stdout, printed.stderr
    (flag, kind, default, doc) = [row for row in algorithms.settings_table("ppo") if row[0] == "--algorithm.epochs"][0]
    assert f"`{default}`" in epochs and doc in epochs and " ".join(doc.split()[:6]) in " ".join(printed.stdout.split())
    assert len(rows) == 2 + len(algorithms.get("ppo").Config.model_fields) - 1  # every setting but the name


@pytest.mark.parametrize("service", [*SERVICES, "up"])
def test_help_and_the_docs_read_each_setting_from_one_docstring(service):
    """`rlrings <service> --help` and the docs page's table show the same words for every flag."""
    result = subprocess.run([sys.executable, "-m", "rlrings.ops.cli", service, "--help"], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "COLUMNS": "120"})  # fmt: skip
    assert result.returncode == 0, result.stderr

    def squeezed(text: str) -> str:
        return re.sub(r"[\s`]", "", text)

    shown = squeezed(result.stdout)
    settings = [setting for setting in docs.settings(docs.settings_class(service)) if setting.flag]
    assert settings and all(setting.description for setting in settings), [
        s.name for s in settings if not s.description
    ]
    for setting in settings:
        assert squeezed(setting.description)[:120] in shown, (service, setting.name)
    page = (ROOT / "docs" / "services" / f"{service}.md").read_text()
    assert f"<!-- rlrings:settings service={service} -->" in page


def test_every_algorithm_has_a_page_with_its_settings_in_the_site():
    nav = (ROOT / "mkdocs.yml").read_text()
    for name in algorithms.REGISTRY:
        page = ROOT / "docs" / "algorithms" / f"{name}.md"
        assert f"<!-- rlrings:settings algorithm={name} -->" in page.read_text(), name
        assert f"algorithms/{name}.md" in nav, name
        undocumented = [flag for flag, _, _, doc in algorithms.settings_table(name) if not doc]
        assert not undocumented, f"{name}: settings without a docstring: {undocumented}"


# (CQL is left out: it is Cassandra's query language too)
WELL_KNOWN_ALGORITHMS = ("a2c", "a3c", "acer", "acktr", "apex", "appo", "bc", "ddpg", "dqn", "dreamer", "impala",
                         "iql", "marwil", "muzero", "ppo", "r2d2", "rainbow", "sac", "td3", "trpo")  # fmt: skip


def test_the_chart_names_only_algorithms_and_settings_the_registry_has():
    chart = ROOT / "helm" / "rlrings"
    for path in (chart / "values.yaml", *sorted((chart / "ci").glob("*.yaml"))):
        text = path.read_text()
        comments = " ".join(line.split("#", 1)[1] for line in text.splitlines() if "#" in line)
        named = {word for word in re.findall(r"[a-z0-9]+", comments.lower()) if word in WELL_KNOWN_ALGORITHMS}
        assert named <= set(algorithms.REGISTRY), f"{path.name} names {named - set(algorithms.REGISTRY)}"
        given = (yaml.safe_load(text) or {}).get("algorithm")
        if given:  # what the chart hands every service: refused here as a service would refuse it
            config = algorithms.parse(given)
            assert config.name in algorithms.REGISTRY
    # every key of values that is a service setting reads its setting's docstring (the check above
    # rewrites them); and a key that looks like a setting but is not one is named here
    values = yaml.safe_load((chart / "values.yaml").read_text())
    for section in ("replay", "parameter", "learner", "actor", "inference", "viewer"):
        for key in ("port", "metricsPort"):
            assert docs.values_field(section, key) is not None, (section, key)
    assert values["algorithm"] == {}  # no name: the default, from the registry


def test_the_config_files_of_the_docs_load_as_written(tmp_path):
    """The YAML a user copies from the docs is read by the services' own loaders (file paths aside)."""
    from rlrings.rpc import certs
    from rlrings.rpc.security import AuthConfig
    from rlrings.services.parameter.config import ParameterConfig
    from rlrings.services.replay.config import ReplayConfig

    cassandra = yaml.safe_load(snippet("cassandra-store"))
    config = load_config(ReplayConfig, [], **cassandra, env="CartPole-v1", snapshot_dir=tmp_path / "replay")
    assert config.store == "cassandra" and config.cassandra.consistency == "QUORUM"
    assert config.cassandra.replication_factor == 3 and config.cassandra.ttl_seconds == 604_800

    ca = certs.make_ca(tmp_path / "certs")
    pair = certs.issue(ca, tmp_path / "certs", "parameter", ["localhost"])
    text = snippet("tls-settings")
    paths = {"/etc/rlrings-tls/tls.crt": pair.cert_file, "/etc/rlrings-tls/tls.key": pair.key_file,
             "/etc/rlrings-tls/ca.crt": ca.cert_file, "/etc/rlrings-auth/tokens.yaml": tmp_path / "tokens.yaml",
             "token: ...": "token: internal-token-0123456789"}  # fmt: skip
    for old, new in paths.items():
        assert old in text
        text = text.replace(old, str(new))
    (tmp_path / "tokens.yaml").write_text(snippet("tokens-file"))
    (tmp_path / "parameter.yaml").write_text(text)
    config = load_config(ParameterConfig, ["--config", str(tmp_path / "parameter.yaml")], directory=tmp_path / "w")
    assert config.tls.mutual and config.health_port == 8090
    (token,) = AuthConfig(tokens_file=tmp_path / "tokens.yaml").tokens()
    assert token.name == "game-team-a" and token.scopes == ["insert"] and token.limits.max_concurrent_calls == 16
