#!/usr/bin/env python3
"""Cheap checks of the deployment files, run by .ci/run.

1. Every YAML file under deploy/ parses, and every document in it has
   apiVersion, kind and metadata.name (Kubernetes objects) — files that are not
   Kubernetes objects (none today) can be listed in NOT_K8S.
2. The Helm chart's Chart.yaml and values.yaml parse, values.schema.json is valid
   JSON and (with jsonschema) accepts values.yaml.
3. With helm-python-sdk: `helm lint --strict` of the chart, and a render in both
   modes, whose documents get the same key checks as (1).
4. With kubernetes-validate: deploy/ and the rendered chart are checked against
   the bundled Kubernetes schemas.
5. The example configs under deploy/examples/ parse as TOML.

Steps whose library is missing are skipped with a message (PyYAML is installed
with pip if it can be); any failed check makes the exit status 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CHART = ROOT / "helm" / "macula"
# YAML files under deploy/ that are not Kubernetes objects (relative paths).
NOT_K8S: set[str] = set()
# Values for rendering the chart in each mode (on top of values.yaml).
RENDER_CASES = {
    "bridge": {},
    "bridge-dev": {"tls": {"mode": "development"}},
    "node": {"mode": "node", "replicaCount": 2, "node": {"uplink": "bridge.example.net:9443"}},
}

failures: list[str] = []


def fail(msg: str) -> None:
    failures.append(msg)
    print(f"FAIL: {msg}")


def ok(msg: str) -> None:
    print(f"ok:   {msg}")


def skip(msg: str) -> None:
    print(f"skip: {msg}")


def import_yaml():
    try:
        import yaml  # type: ignore

        return yaml
    except ImportError:
        pass
    print("PyYAML not importable; trying pip install pyyaml")
    for extra in ([], ["--user"], ["--user", "--break-system-packages"]):
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", *extra, "pyyaml"]
        if subprocess.run(cmd, check=False).returncode == 0:
            break
    try:
        import importlib
        import site

        importlib.invalidate_caches()
        if site.ENABLE_USER_SITE and site.getusersitepackages() not in sys.path:
            sys.path.append(site.getusersitepackages())
        import yaml  # type: ignore

        return yaml
    except ImportError:
        return None


def check_k8s_docs(origin: str, docs: list) -> None:
    """Every non-empty document must be a Kubernetes object with a name."""
    seen = 0
    for i, doc in enumerate(docs):
        if doc is None:
            continue
        seen += 1
        where = f"{origin} document {i}"
        if not isinstance(doc, dict):
            fail(f"{where}: not a mapping")
            continue
        missing = [k for k in ("apiVersion", "kind") if not doc.get(k)]
        meta = doc.get("metadata")
        if not isinstance(meta, dict) or not meta.get("name"):
            missing.append("metadata.name")
        if missing:
            fail(f"{where} ({doc.get('kind', '?')}): missing {', '.join(missing)}")
        else:
            ok(f"{where}: {doc['kind']}/{meta['name']}")
    if seen == 0:
        fail(f"{origin}: no documents")


def check_deploy(yaml) -> list[Path]:
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
    if not files:
        fail("no YAML files under deploy/")
    k8s_files = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as e:
            fail(f"{rel}: does not parse: {e}")
            continue
        if path.relative_to(DEPLOY).as_posix() in NOT_K8S:
            ok(f"{rel}: parses")
            continue
        check_k8s_docs(rel, docs)
        k8s_files.append(path)
    return k8s_files


def check_examples() -> None:
    if tomllib is None:
        skip("tomllib needs Python 3.11: example configs not parsed")
        return
    for path in sorted((DEPLOY / "examples").glob("*.toml")):
        rel = path.relative_to(ROOT).as_posix()
        try:
            tomllib.loads(path.read_text())
            ok(f"{rel}: parses as TOML")
        except tomllib.TOMLDecodeError as e:
            fail(f"{rel}: does not parse as TOML: {e}")


def check_chart_files(yaml) -> dict | None:
    values = None
    for name in ("Chart.yaml", "values.yaml"):
        path = CHART / name
        try:
            data = yaml.safe_load(path.read_text())
            ok(f"helm/macula/{name}: parses")
            if name == "values.yaml":
                values = data
        except (OSError, yaml.YAMLError) as e:
            fail(f"helm/macula/{name}: {e}")
    try:
        schema = json.loads((CHART / "values.schema.json").read_text())
        ok("helm/macula/values.schema.json: parses")
    except (OSError, json.JSONDecodeError) as e:
        fail(f"helm/macula/values.schema.json: {e}")
        return values
    try:
        import jsonschema  # type: ignore
    except ImportError:
        skip("jsonschema not importable: values.yaml not checked against the schema")
        return values
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
        jsonschema.validate(values, schema)
        ok("values.yaml satisfies values.schema.json")
    except jsonschema.exceptions.SchemaError as e:
        fail(f"values.schema.json is not a valid schema: {e.message}")
    except jsonschema.exceptions.ValidationError as e:
        fail(f"values.yaml does not satisfy values.schema.json: {e.message}")
    return values


def check_chart_render(yaml) -> dict[str, str]:
    """Lint and render the chart; returns {case: rendered multi-document YAML}."""
    try:
        import helm_python as helm  # type: ignore
    except Exception as e:  # ImportError, or the bundled library failed to load
        skip(f"helm-python-sdk not usable ({e}): chart not linted or rendered")
        return {}
    rendered: dict[str, str] = {}
    for case, values in RENDER_CASES.items():
        try:
            report = helm.lint(str(CHART), values, strict=True)
        except helm.HelmError as e:
            fail(f"helm lint ({case}): {e}")
            continue
        problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        for m in report.get("messages", []):
            print(f"      lint ({case}): severity {m.get('severity')} {m.get('path')}: {m.get('error')}")
        if problems or report.get("errors"):
            fail(f"helm lint --strict ({case}): {len(problems)} warnings/errors {report.get('errors') or ''}")
        else:
            ok(f"helm lint --strict ({case})")
        try:
            chart = helm.Chart.load(str(CHART))
            chart.validate_schema(values)
            manifests = chart.render(values, name="macula", namespace="macula", is_install=True)
        except helm.HelmError as e:
            fail(f"helm render ({case}): {e}")
            continue
        docs_text = []
        for tpl, text in sorted(manifests.items()):
            if not tpl.endswith((".yaml", ".yml")) or not text.strip():
                continue
            try:
                docs = list(yaml.safe_load_all(text))
            except yaml.YAMLError as e:
                fail(f"render ({case}) {tpl}: not YAML: {e}")
                continue
            check_k8s_docs(f"render ({case}) {tpl}", docs)
            docs_text.append(text)
            for doc in docs:
                if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
                    for key, body in (doc.get("data") or {}).items():
                        if key.endswith(".toml") and tomllib is not None:
                            try:
                                tomllib.loads(body)
                                ok(f"render ({case}) {tpl}: {key} parses as TOML")
                            except tomllib.TOMLDecodeError as e:
                                fail(f"render ({case}) {tpl}: {key} is not TOML: {e}\n{body}")
        rendered[case] = "\n---\n".join(docs_text)
    return rendered


def check_k8s_schemas(files: list[Path], rendered: dict[str, str], tmp: Path) -> None:
    try:
        import kubernetes_validate  # type: ignore  # noqa: F401
    except ImportError:
        skip("kubernetes-validate not importable: no Kubernetes schema check")
        return
    tmp.mkdir(parents=True, exist_ok=True)
    targets = [str(p) for p in files]
    for case, text in rendered.items():
        out = tmp / f"chart-{case}.yaml"
        out.write_text(text)
        targets.append(str(out))
    if not targets:
        return
    # --strict rejects unknown fields. One run per file, so that one broken file
    # (the tool can crash on it) does not hide the others; long reports are cut.
    for target in targets:
        cmd = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", target]
        res = subprocess.run(cmd, check=False, capture_output=True, text=True)
        rel = Path(target).relative_to(ROOT).as_posix()
        if res.returncode != 0:
            lines = (res.stdout + res.stderr).splitlines()
            print("\n".join(lines[:15] + (["      ..."] + lines[-15:] if len(lines) > 30 else lines[15:])))
            fail(f"kubernetes-validate --strict {rel}")
        else:
            ok(f"kubernetes-validate --strict {rel}")


def main() -> int:
    yaml = import_yaml()
    check_examples()
    if yaml is None:
        skip("PyYAML could not be imported or installed: YAML checks skipped")
    else:
        files = check_deploy(yaml)
        check_chart_files(yaml)
        rendered = check_chart_render(yaml)
        check_k8s_schemas(files, rendered, ROOT / "target" / "ci-manifests")
    if failures:
        print(f"\n{len(failures)} manifest check(s) failed")
        return 1
    print("\nmanifest checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
