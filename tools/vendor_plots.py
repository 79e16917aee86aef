"""Install step: an HTML template for `dvc plots show` with vega, vega-lite and vega-embed inlined, so the plots
page works without a network (DVC's own page loads them from a CDN). The three libraries come from their npm
packages, pinned to the versions DVC's renderer was written for and checked against the registry's sha512.
Writes .dvc/plots/offline.html (not committed; .dvc/config points `plots.html_template` at it).

    python tools/vendor_plots.py        (make install runs it)
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

PACKAGES = {  # name: (version, file in the tarball, npm dist.integrity)
    "vega": (
        "5.20.2",
        "package/build/vega.min.js",
        "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw==",
    ),
    "vega-lite": (
        "5.2.0",
        "package/build/vega-lite.min.js",
        "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw==",
    ),
    "vega-embed": (
        "6.18.2",
        "package/build/vega-embed.min.js",
        "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg==",
    ),
}
REGISTRY = "https://registry.npmjs.org"
OUT = Path(__file__).resolve().parents[1] / ".dvc" / "plots" / "offline.html"
PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>techbench: DVC plots</title>
{scripts}
    <style>table {{ border-spacing: 15px; }} body {{ font-family: system-ui, sans-serif; }}</style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def fetch(name: str, version: str, member: str, integrity: str) -> str:
    url = f"{REGISTRY}/{name}/-/{name}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as response:
        blob = response.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(blob).digest()).decode()
    if digest != integrity:
        raise SystemExit(f"{url}: sha512 {digest} does not match the pinned {integrity}")
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        return tar.extractfile(member).read().decode()


def main() -> int:
    if OUT.is_file() and all(f"{n}@{v}" in OUT.read_text() for n, (v, _, _) in PACKAGES.items()):
        return 0  # already vendored at these versions
    scripts = []
    for name, (version, member, integrity) in PACKAGES.items():
        code = fetch(name, version, member, integrity).replace("</script", "<\\/script")
        scripts.append(f"    <!-- {name}@{version} -->\n    <script>{code}</script>")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    # DVC fills {refresh_tag} and {plot_divs}; {scripts} is left out on purpose (its CDN tags).
    OUT.write_text(PAGE.format(scripts="\n".join(scripts)))
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
