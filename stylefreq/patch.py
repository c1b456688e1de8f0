"""Apply stylefreq's patches (patches/*.patch) to a stock StyleGAN2-ADA-PyTorch checkout.

    python -m stylefreq.patch /path/to/stylegan2-ada-pytorch            # apply all
    python -m stylefreq.patch /path/to/stylegan2-ada-pytorch --check    # only check that they apply

The patches are written for upstream's final commit d72cc7d. Every patch is checked with
`git apply --check` before any is applied, so a checkout is either patched completely or left
untouched; a patch that does not apply is reported in one sentence naming the patch and the file
and line where it failed. Patches already applied are recognised and skipped. The patches live in
the stylefreq source tree (`patches/`, next to this package): install stylefreq with
`pip install -e <stylefreq checkout>` (or pass --patches).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys

PATCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'patches')
CHECKOUT_MARKERS = ('train.py', 'legacy.py', 'calc_metrics.py', 'torch_utils/persistence.py', 'metrics/metric_main.py',
                    'training/training_loop.py')


class PatchError(Exception):
    """One sentence saying why the patches cannot be applied."""


def patch_files(patch_dir=PATCH_DIR):
    files = sorted(glob.glob(os.path.join(patch_dir, '*.patch')))
    if not files:
        raise PatchError(f'no *.patch files in {patch_dir} (install stylefreq from its source tree with pip install -e)')
    return files


def _git(args, checkout):
    env = dict(os.environ)
    # Never let git discover a repository *around* the checkout (paths would be taken relative to it).
    env['GIT_CEILING_DIRECTORIES'] = os.path.dirname(os.path.abspath(checkout))
    return subprocess.run(['git'] + args, cwd=checkout, env=env, capture_output=True, text=True)


def _first_error(stderr: str) -> str:
    m = re.search(r'patch failed: (\S+?):(\d+)', stderr)
    if m:
        return f'{m.group(1)} does not match near line {m.group(2)}'
    m = re.search(r'error: (\S+): (No such file or directory|does not exist in index)', stderr)
    if m:
        return f'{m.group(1)} is missing'
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return lines[0] if lines else 'git apply failed'


def check_checkout(checkout):
    if not os.path.isdir(checkout):
        raise PatchError(f'{checkout} is not a directory')
    missing = [m for m in CHECKOUT_MARKERS if not os.path.isfile(os.path.join(checkout, m))]
    if missing:
        raise PatchError(f'{checkout} is not a StyleGAN2-ADA-PyTorch checkout (it has no {", ".join(missing)})')
    if shutil.which('git') is None:
        raise PatchError('git is needed to apply the patches (git apply) but is not on PATH')


def apply_patches(checkout, patch_dir=PATCH_DIR, check_only=False):
    """Check all patches, then apply those not applied yet. Returns [(patch name, 'applied'|'already applied'|'applies')]."""
    check_checkout(checkout)
    todo, report = [], []
    for path in patch_files(patch_dir):
        name = os.path.basename(path)
        # Reverse first: a patch that only adds lines may also apply forward a second time.
        if _git(['apply', '--check', '--reverse', path], checkout).returncode == 0:
            report.append((name, 'already applied'))
            continue
        res = _git(['apply', '--check', path], checkout)
        if res.returncode == 0:
            todo.append(path)
            report.append((name, 'applies' if check_only else 'applied'))
            continue
        raise PatchError(f'{name} does not apply to {checkout}: {_first_error(res.stderr)} '
                         f'(the patches are for upstream commit d72cc7d; nothing was changed)')
    if not check_only:
        for path in todo:
            res = _git(['apply', path], checkout)
            if res.returncode != 0:
                raise PatchError(f'{os.path.basename(path)} failed to apply to {checkout}: {_first_error(res.stderr)}')
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m stylefreq.patch', description=__doc__.split('\n\n')[0])
    parser.add_argument('checkout', help='StyleGAN2-ADA-PyTorch checkout (commit d72cc7d)')
    parser.add_argument('--check', action='store_true', help='only check that the patches apply')
    parser.add_argument('--patches', default=PATCH_DIR, help=f'patch directory [default: {PATCH_DIR}]')
    args = parser.parse_args(argv)
    try:
        report = apply_patches(args.checkout, args.patches, check_only=args.check)
    except PatchError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    for name, what in report:
        print(f'{name}: {what}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
