#!/usr/bin/env python3
"""Checks that no normal (non-dev) dependency of tower-gzip needs a newer Rust than its MSRV.

Only one toolchain is available in CI, so the MSRV (`rust-version` in Cargo.toml) cannot be proven
by building with that compiler. This script checks the dependency side: for each feature set
below, every package that the library pulls in (normal and build dependencies, transitively, for
every target platform; dev-dependencies excluded) must declare a `rust_version` no newer than ours,
and must not use an edition newer than our MSRV supports. The library's own code is checked by
clippy's `incompatible_msrv` lint (see .ci/run).

The package set comes from `cargo tree -e normal,build --target all`, which resolves features
without the dev-dependencies (`cargo metadata`'s resolve unifies them in, so it would list packages
that only tests pull in, such as zlib-rs in a miniz build). `rust_version` and `edition` come from
`cargo metadata --format-version 1`. Uses the versions in Cargo.lock.

Usage: python3 scripts/check_msrv.py   (from anywhere inside the repository)
"""

import json
import os
import subprocess
import sys

FEATURE_SETS = [
    ("default (zlib-rs)", []),
    ("miniz", ["--no-default-features", "--features", "miniz"]),
]

# The first Rust release that accepts each edition.
EDITION_MIN = {"2015": (1, 0), "2018": (1, 31), "2021": (1, 56), "2024": (1, 85)}

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cargo(*args):
    out = subprocess.run(
        ["cargo", *args], cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True
    )
    return out.stdout


def parse_version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple((parts + [0, 0])[:3])


def show(version):
    return ".".join(str(p) for p in version[:2]) + (f".{version[2]}" if version[2] else "")


def main():
    metadata = json.loads(cargo("metadata", "--format-version", "1", "--locked"))
    packages = {(p["name"], p["version"]): p for p in metadata["packages"]}
    root = next(p for p in metadata["packages"] if p["id"] == metadata["resolve"]["root"])
    if not root.get("rust_version"):
        sys.exit("check_msrv: Cargo.toml declares no rust-version")
    msrv = parse_version(root["rust_version"])
    print(f"{root['name']} rust-version = {root['rust_version']}")

    failures = []
    for label, flags in FEATURE_SETS:
        tree = cargo(
            "tree", "--locked", "-p", root["name"], "-e", "normal,build", "--target", "all",
            "--prefix", "none", "--format", "{p}", *flags,
        )
        deps = set()
        for line in tree.splitlines():
            fields = line.split()
            if len(fields) < 2 or not fields[1].startswith("v"):
                continue
            name, version = fields[0], fields[1][1:]
            if name != root["name"]:
                deps.add((name, version))

        print(f"\nfeatures: {label}: {len(deps)} normal/build dependencies")
        print(f"{'package':<20} {'version':<10} {'rust_version':<13} {'edition':<8} {'needs':<7} ok")
        for key in sorted(deps):
            package = packages.get(key)
            if package is None:
                failures.append(f"{label}: {key[0]} {key[1]} is missing from cargo metadata")
                continue
            declared = package.get("rust_version")
            edition_min = EDITION_MIN.get(package["edition"])
            if edition_min is None:
                failures.append(f"{label}: {key[0]} {key[1]}: unknown edition {package['edition']}")
                edition_min = (999, 0)
            needs = max(parse_version(declared) if declared else (0, 0, 0), edition_min + (0,))
            ok = needs <= msrv
            if not ok:
                failures.append(
                    f"{label}: {key[0]} {key[1]} needs Rust {show(needs)} "
                    f"(rust_version {declared or '-'}, edition {package['edition']})"
                )
            print(
                f"{key[0]:<20} {key[1]:<10} {declared or '-':<13} {package['edition']:<8} "
                f"{show(needs):<7} {'yes' if ok else 'NO'}"
            )

    print("\n('-': no rust_version declared; 'needs' is then the edition's first Rust release)")
    if failures:
        print("\nMSRV check FAILED:")
        for failure in failures:
            print(f"  {failure}")
        print(
            f"Raise rust-version in Cargo.toml (now {root['rust_version']}) or pin the dependency "
            "to an older version in Cargo.lock."
        )
        sys.exit(1)
    print(f"\nMSRV check passed: every normal/build dependency builds with Rust {show(msrv)}.")


if __name__ == "__main__":
    main()
