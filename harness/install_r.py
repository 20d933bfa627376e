"""R for `python3 -m harness setup --r`: R from Debian, a reticulate safe inside rpy2, idempotently.

Standard library only: this runs before .venv exists. Two steps, called by harness.commands.setup:

    install_system()            R and the R packages reticulate needs, from Debian (apt-get), if missing
    install_r_packages(python)  reticulate >= 1.31 into the project's R library .r-lib/

Why reticulate >= 1.31: older versions (Debian bookworm ships 1.28) crash inside rpy2 when R's
garbage collector frees a Python object, because rpy2 releases the GIL while R runs. CRAN is used
where it is reachable; otherwise Debian trixie's source package is fetched with apt (its checksum
is verified against the signed index) and built into .r-lib with `R CMD INSTALL`.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
R_LIB = REPO / ".r-lib"  # git-ignored; the R runtime puts it first on .libPaths()
RETICULATE_MIN = (1, 31)
CRAN = "https://cloud.r-project.org"
DEBIAN_SOURCE = ("deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                 "http://deb.debian.org/debian trixie main")

# r-base-dev: the compiler toolchain R CMD INSTALL and rpy2's build use; the r-cran-* packages are
# reticulate's dependencies; r-cran-digest computes the data digest inside R (SHA-256).
DEBIAN_PACKAGES = [
    "r-base-core", "r-base-dev", "r-cran-jsonlite", "r-cran-rlang", "r-cran-rcpp", "r-cran-rcpptoml",
    "r-cran-here", "r-cran-png", "r-cran-rappdirs", "r-cran-withr", "r-cran-matrix", "r-cran-digest",
]


def say(text: str) -> None:
    print(f"[setup r] {text}", file=sys.stderr, flush=True)


def _missing_debian_packages(packages: list[str]) -> list[str]:
    if shutil.which("dpkg-query") is None:
        return [] if shutil.which("R") else packages
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n", *packages],
                         capture_output=True, text=True)
    installed = {line.split()[0] for line in out.stdout.splitlines() if line.endswith(" installed")}
    return [p for p in packages if p not in installed]


def _as_root(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return cmd
    if shutil.which("sudo"):
        return ["sudo", "-n", *cmd]
    raise SystemExit(f"[setup r] needs root to run: {' '.join(cmd)}")


def install_system(packages: list[str] = DEBIAN_PACKAGES) -> None:
    """Install Debian packages (by default R and the R packages listed above); a no-op when all are present."""
    missing = _missing_debian_packages(packages)
    if not missing:
        say(f"present: {' '.join(packages)}")
        return
    if shutil.which("apt-get") is None:
        raise SystemExit(f"[setup r] missing {' '.join(missing)} and no apt-get here: install them (R >= 4.2 "
                         "among them) with your system's package manager")
    say(f"installing {' '.join(missing)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(_as_root(["apt-get", "update", "-q"]), check=True, env=env)
    subprocess.run(_as_root(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]),
                   check=True, env=env)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text))


class RscriptFails(RuntimeError):
    """R is installed but Rscript does not run (which is not the same as reticulate missing)."""


def reticulate_version() -> str | None:
    """The reticulate R finds first with .r-lib in front (what the R runtime loads), or None;
    RscriptFails when Rscript itself fails."""
    if shutil.which("Rscript") is None:
        return None
    env = dict(os.environ, R_LIBS_USER=str(R_LIB))
    try:
        out = subprocess.run(["Rscript", "--vanilla", "-e",
                              f'.libPaths(c("{R_LIB}", .libPaths())); '
                              'cat(tryCatch(as.character(packageVersion("reticulate")), error = function(e) ""))'],
                             capture_output=True, text=True, env=env, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RscriptFails(f"Rscript does not run ({e})") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RscriptFails(f"Rscript exits with code {out.returncode}: {last}")
    return out.stdout.strip() or None


def _cran_reachable() -> bool:
    try:
        urllib.request.urlopen(f"{CRAN}/src/contrib/PACKAGES", timeout=10).close()
        return True
    except OSError:
        return False


def _install_from_cran() -> None:
    say(f"installing reticulate from CRAN into {R_LIB.name}/")
    code = (f'install.packages("reticulate", lib = "{R_LIB}", repos = "{CRAN}"); '
            f'library(reticulate, lib.loc = "{R_LIB}")')
    subprocess.run(["Rscript", "--vanilla", "-e", code], check=True)


def _install_from_debian_source() -> None:
    """Fetch Debian trixie's r-cran-reticulate source with a private apt configuration (the system's
    sources are left alone) and build its upstream tarball (.orig.tar.xz) into .r-lib."""
    with tempfile.TemporaryDirectory(prefix="dl-rosetta-apt-") as tmp:
        tmp = Path(tmp)
        (tmp / "sources.list").write_text(DEBIAN_SOURCE + "\n")
        (tmp / "lists" / "partial").mkdir(parents=True)
        (tmp / "download").mkdir()
        apt = ["apt-get", "-q", f"-oDir::Etc::SourceList={tmp / 'sources.list'}", "-oDir::Etc::SourceParts=/dev/null",
               f"-oDir::State::Lists={tmp / 'lists'}", f"-oDir::Cache={tmp / 'cache'}", "-oAPT::Sandbox::User=root"]
        say("fetching Debian trixie's r-cran-reticulate source package")
        subprocess.run([*apt, "update"], check=True, stdout=subprocess.DEVNULL)
        # Only the upstream tarball is needed; the Debian packaging files may be absent from a mirror,
        # which makes apt-get exit non-zero after the tarball (checked against the index) is saved.
        fetched = subprocess.run([*apt, "source", "--download-only", "r-cran-reticulate"],
                                 cwd=tmp / "download", capture_output=True, text=True)
        tarballs = sorted((tmp / "download").glob("r-cran-reticulate_*.orig.tar.*"))
        if not tarballs:
            raise SystemExit(f"[setup r] could not fetch r-cran-reticulate's source:\n{fetched.stderr.strip()}")
        say(f"building {tarballs[-1].name} into {R_LIB.name}/ (about 20 s)")
        subprocess.run(["R", "CMD", "INSTALL", "--no-docs", "--no-html", "--no-multiarch", "-l", str(R_LIB),
                        str(tarballs[-1])], check=True, stdout=subprocess.DEVNULL)


def _check_inside_rpy2(python: Path) -> None:
    """The combination that matters: R inside rpy2 in this Python, loading reticulate from .r-lib."""
    code = ("import rpy2.robjects as ro, rpy2; "
            f"ro.r('.libPaths(c(\"{R_LIB}\", .libPaths()))'); "
            "v = ro.r('as.character(packageVersion(\"reticulate\"))')[0]; "
            "print(f'{ro.r(\"R.version.string\")[0]}, reticulate {v}, rpy2 {rpy2.__version__}')")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"[setup r] rpy2 cannot host R with reticulate:\n{out.stderr.strip()[-2000:]}")
    say(out.stdout.strip())


def install_r_packages(python: Path) -> None:
    """reticulate >= 1.31 into .r-lib (skipped when R already finds one), then a check inside rpy2."""
    if shutil.which("R") is None:
        raise SystemExit("[setup r] R is not installed: run install_system() first")
    try:
        found = reticulate_version()
    except RscriptFails as e:
        raise SystemExit(f"[setup r] R is installed but {e}; reinstall R (r-base-core)") from None
    if found and _version(found) >= RETICULATE_MIN:
        say(f"reticulate {found} present")
    else:
        if found:
            say(f"reticulate {found} is older than {'.'.join(map(str, RETICULATE_MIN))} (unsafe inside rpy2)")
        R_LIB.mkdir(exist_ok=True)
        if _cran_reachable():
            _install_from_cran()
        else:
            _install_from_debian_source()
        found = reticulate_version()
        if not found or _version(found) < RETICULATE_MIN:
            raise SystemExit(f"[setup r] reticulate in {R_LIB} is {found}, still older than 1.31")
    _check_inside_rpy2(python)
