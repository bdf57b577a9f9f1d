"""Sizes of the built images, their layers and their largest installed packages.

Called by ``docker/test-images.sh`` after a build: reads each image's ``buildah inspect``
JSON (saved to a file) and, for the packages, a mounted copy of its root file system. Prints
Markdown for ``docker/RESULTS.md`` and, with ``--bench``, saves the sizes as benchmark rows
(``bench/results/images.json`` and ``.md``, through ``bench/common.py``).

Example::

    python docker/image_report.py --base base.json \\
        trainer=trainer.json=/var/lib/containers/storage/vfs/dir/ID ... --bench
"""

from __future__ import annotations

import argparse
import json
import os
import sys

SITE_PACKAGES = "opt/venv/lib/python3.11/site-packages"
BENCH_NAME = "images"
TOP_PACKAGES = 6


def human(size: float) -> str:
    """Bytes as the unit buildah prints them in (powers of 1000).

    >>> human(2_871_109_120), human(20_108_288), human(5_090)
    ('2.87 GB', '20.1 MB', '5.09 kB')
    """
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.3g} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def layers(inspect: dict) -> list[tuple[int, str]]:
    """(size, what made it) per layer, bottom first.

    buildah commits each build stage as one layer and its history marks ``empty_layer``
    unreliably, so the instructions that change files (ADD, COPY, RUN) are matched to the
    layers in order, and those left over belong to the last layer (the target's stage).

    >>> inspect = {"Manifest": json.dumps({"layers": [{"size": 3}, {"size": 7}]}),
    ...     "OCIv1": {"history": [{"created_by": "/bin/sh -c #(nop) ADD file:1 in /"},
    ...         {"created_by": "/bin/sh -c #(nop) USER 1000"},
    ...         {"created_by": "|1 A=1 /bin/sh -c pip install x"},
    ...         {"created_by": "/bin/sh -c #(nop) COPY dir:2 in /opt"}]}}
    >>> layers(inspect)
    [(3, 'ADD file:1 in /'), (7, 'RUN pip install x; COPY dir:2 in /opt')]
    """
    sizes = [layer["size"] for layer in json.loads(inspect["Manifest"])["layers"]]
    steps = []
    for entry in inspect["OCIv1"].get("history", []):
        made_by = entry.get("created_by", "")
        if "#(nop) " in made_by:
            instruction = made_by.split("#(nop) ", 1)[1].strip()
            if instruction.split(" ", 1)[0] in ("ADD", "COPY"):
                steps.append(instruction)
        elif "/bin/sh -c " in made_by:
            words = made_by.split("/bin/sh -c ", 1)[1].split()
            # Build-time mounts (cache, requirements, wheels) leave nothing in the layer.
            steps.append("RUN " + " ".join(w for w in words if not w.startswith("--mount=")))
    if len(steps) > len(sizes) and sizes:
        steps = steps[: len(sizes) - 1] + ["; ".join(steps[len(sizes) - 1 :])]
    steps += [""] * (len(sizes) - len(steps))
    return list(zip(sizes, steps, strict=True))


def largest_packages(root: str, top: int = TOP_PACKAGES) -> list[tuple[int, str]]:
    """The ``top`` largest entries of the image's site-packages, by bytes on disk."""
    site = os.path.join(root, SITE_PACKAGES)
    found = []
    for name in os.listdir(site):
        path = os.path.join(site, name)
        total = 0
        for base, _, files in os.walk(path):
            for f in files:
                p = os.path.join(base, f)
                if not os.path.islink(p):
                    total += os.path.getsize(p)
        if os.path.isfile(path):
            total = os.path.getsize(path)
        found.append((total, name))
    return sorted(found, reverse=True)[:top]


def _short(text: str, width: int = 200) -> str:
    text = text.replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="inspect JSON of the base image")
    parser.add_argument("images", nargs="+", help="TARGET=INSPECT_JSON=MOUNTED_ROOT")
    parser.add_argument("--bench", action="store_true", help="save bench/results/images.*")
    parser.add_argument("--markdown", help="write the Markdown here instead of to stdout")
    args = parser.parse_args(argv)

    with open(args.base) as f:
        base_size = sum(size for size, _ in layers(json.load(f)))
    report = []
    for spec in args.images:
        target, inspect_path, root = spec.split("=", 2)
        with open(inspect_path) as f:
            inspect = json.load(f)
        image_layers = layers(inspect)
        size = sum(s for s, _ in image_layers)
        report.append((target, size, image_layers, largest_packages(root)))

    out = ["| image | size |", "|---|---|"]
    out += [f"| localhost/cloud-ml-jobs-{t}:test | {human(size)} |" for t, size, _, _ in report]
    out += [f"| localhost/cloud-ml-jobs-base:bookworm | {human(base_size)} |", ""]
    notes = []
    for target, size, image_layers, packages in report:
        out += [f"**{target}** layers, largest first:", "", "| size | made by |", "|---|---|"]
        for layer_size, made_by in sorted(image_layers, reverse=True):
            out.append(f"| {human(layer_size)} | `{_short(made_by)}` |")
        biggest = ", ".join(f"{name} {human(s)}" for s, name in packages)
        out += ["", f"Largest packages in its top layer: {biggest}.", ""]
        top_size, top_made_by = max(image_layers)
        notes.append(
            f"- {target}: {human(size)}; largest layer {human(top_size)} "
            f"(`{_short(top_made_by, 60)}`); largest packages: {biggest}."
        )
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(out) + "\n")
    else:
        print("\n".join(out))

    if args.bench:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
        from common import Row, save

        rows = [
            Row(
                benchmark=BENCH_NAME,
                measure=f"{target} image size (baseline: the base OS image)",
                value=round(size / 1e6, 1),
                baseline=round(base_size / 1e6, 1),
                unit="MB",
                lower_is_better=True,
            )
            for target, size, _, _ in report
        ]
        save(
            BENCH_NAME,
            rows,
            "Uncompressed sizes from the image test's build (`bash docker/test-images.sh`, "
            "buildah, vfs storage); the base is a Debian bookworm rootfs standing in for the "
            "CUDA runtime image.\n\n" + "\n".join(notes),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
