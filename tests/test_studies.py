"""The studies package end to end at toy size: a bias curve of 2 carriers x 2 variants at 16 px,
the cosine study and the SSD study, through `python -m studies` (click, in-process); outputs,
resuming, and errors."""

import json
import os

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from stylefreq import checkpoint
from studies.__main__ import main

TOY = ['--resolution=16', '--kimg=1', '--count=200', '--samples=100', '--batch=8', '--cbase=256', '--cmax=16',
       '--map=1', '--threads=1']


def invoke(args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))


def test_bias_curve_toy(tmp_path):
    out = tmp_path / 'bias'
    result = invoke(['bias_curve', f'--outdir={out}', '--carriers=1,7', '--variants=base,fsg', '--seeds=0'] + TOY)
    assert result.exit_code == 0, result.output
    data = json.loads((out / 'bias_curve.json').read_text())
    assert data['carriers'] == [1, 7] and set(data['curve']) == {'base', 'fsg'}
    assert len(data['jobs']) == 4 and set(data['reference']) == {'1', '7'}
    for rows in data['curve'].values():
        assert [r['carrier'] for r in rows] == [1, 7]
        assert all(0 <= r['w1']['mean'] <= 1 and 0 <= r['tv']['mean'] <= 1 + 1e-9 for r in rows)
    assert data['frequency_cycles_per_pixel']['7'] == pytest.approx(7 * 2 ** 0.5 / 16)
    with Image.open(out / 'bias_curve.png') as im:
        assert im.size == (640, 400)
    # The fsg job trained a generator with one carrier at the data's frequency, through train.py's options.
    fsg = next(j for j in data['jobs'] if j['variant'] == 'fsg' and j['carrier'] == [7, 7])
    G = checkpoint.load_network_pkl(str(out / fsg['snapshot']), verbose=False)['G_ema']
    assert G.synthesis.carriers == ((7 / 16, 7 / 16),)
    options = json.loads((out / 'runs' / '7x7-fsg-seed0' / 'training_options.json').read_text())
    assert options['total_kimg'] == 1 and options['random_seed'] == 0 and options['spectral_monitor'] is True
    # Running again trains nothing: every job has its result.
    stamps = {p: p.stat().st_mtime_ns for p in (out / 'runs').glob('*/result.json')}
    result = invoke(['bias_curve', f'--outdir={out}', '--carriers=1,7', '--variants=base,fsg', '--seeds=0'] + TOY)
    assert result.exit_code == 0 and 'training' not in result.output
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / 'runs').glob('*/result.json')}


def test_cosine_study_toy(tmp_path):
    out = tmp_path / 'cos'
    result = invoke(['cosine', f'--outdir={out}', '--carrier=7,7', '--variants=base,out', '--seeds=0,1'] + TOY)
    assert result.exit_code == 0, result.output
    data = json.loads((out / 'cosine.json').read_text())
    assert set(data['variants']) == {'base', 'out'} and data['variants']['out']['magnitude_w1']['n'] == 2
    assert 'successes' in data['variants']['out'] and 'successes' not in data['variants']['base']
    assert 0 <= data['reference']['magnitude']['w1'] < 0.1          # real vs real: small
    assert os.path.getsize(out / 'cosine.png') > 5000
    # The same outdir with another setting refuses the old runs instead of mixing them in.
    result = invoke(['cosine', f'--outdir={out}', '--carrier=7,7', '--variants=base', '--seeds=0']
                    + [a if a != '--kimg=1' else '--kimg=2' for a in TOY])
    assert result.exit_code == 1 and 'Traceback' not in result.output, result.output
    assert 'result.json was made with other settings (kimg 1 instead of 2)' in result.output


def test_ssd_study_toy(tmp_path):
    out = tmp_path / 'ssd'
    result = invoke(['ssd', f'--outdir={out}', '--data=builtin:blobs16', '--metric=specdisc1k', '--seeds=0'] + TOY)
    assert result.exit_code == 0, result.output
    data = json.loads((out / 'ssd.json').read_text())
    assert set(data['variants']) == {'plain', 'ssd'}
    assert all(data['variants'][v]['high']['n'] == 1 for v in ('plain', 'ssd'))
    options = json.loads((out / 'runs' / 'ssd-seed0' / 'training_options.json').read_text())
    assert options['D_kwargs']['class_name'] == 'stylefreq.ssd.SSDDiscriminator'
    # Another dataset in the same outdir is refused by name, not measured against the old runs.
    result = invoke(['ssd', f'--outdir={out}', '--data=builtin:blobs32', '--metric=specdisc1k', '--seeds=0'] + TOY)
    assert result.exit_code == 1 and "data 'builtin:blobs16' instead of 'builtin:blobs32'" in result.output, result.output


def test_ablation_toy(tmp_path):
    out = tmp_path / 'abl'
    result = invoke(['ablation', f'--outdir={out}', '--carrier=7,7', '--factors=recipe,no-ema,d-aa,ssd-aa', '--seeds=0',
                     '--base-seeds=0'] + TOY)
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out / 'runs')) == ['7x7-base-seed0', '7x7-out-aa-seed0', '7x7-out-aa-ssd-aa-seed0',
                                                 '7x7-out-no-ema-seed0', '7x7-out-seed0']
    data = json.loads((out / 'ablation.json').read_text())
    assert list(data['factors']) == ['recipe', 'no-ema', 'd-aa', 'ssd-aa']
    threshold = 0.5 * data['runs'][0]['magnitude']['w1']        # the one base run
    for name, entry in data['factors'].items():
        w1 = entry['per_seed']['0']
        assert 0 <= w1 <= 1 and entry['successes'] == int(w1 <= threshold), name
    # Each factor changed exactly its one option of the recipe's training options.
    options = {name: json.loads((out / 'runs' / name / 'training_options.json').read_text())
               for name in ('7x7-out-seed0', '7x7-out-no-ema-seed0', '7x7-out-aa-seed0', '7x7-out-aa-ssd-aa-seed0')}
    recipe = options['7x7-out-seed0']

    def changed(other):
        return sorted(k for k in recipe if k != 'run_dir' and recipe[k] != other[k])
    assert changed(options['7x7-out-no-ema-seed0']) == ['ema_kimg'] and recipe['ema_kimg'] > 0
    assert changed(options['7x7-out-aa-seed0']) == ['D_kwargs']
    assert recipe['D_kwargs']['block_kwargs'] == {'resample_filter': [1]}
    assert options['7x7-out-aa-seed0']['D_kwargs']['block_kwargs'] == {}
    ssd = options['7x7-out-aa-ssd-aa-seed0']['D_kwargs']       # --cfg=ssd around the anti-aliased D
    assert ssd['class_name'] == 'stylefreq.ssd.SSDDiscriminator' and ssd['spatial_kwargs']['block_kwargs'] == {}
    # Without the EMA the snapshot's G_ema is G; with it, it is not.
    for name, same in (('7x7-out-no-ema-seed0', True), ('7x7-out-seed0', False)):
        job = next(r for r in data['runs'] if r['job'] == name)
        snap = checkpoint.load_network_pkl(str(out / job['snapshot']), verbose=False)
        equal = all(torch.equal(a, b) for a, b in zip(snap['G'].parameters(), snap['G_ema'].parameters()))
        assert equal == same, name
    with Image.open(out / 'ablation.png') as im:
        assert im.size == (4 * 420 + 5 * 8, 2 * 300 + 3 * 8)  # base + four factors, four a row
    result = invoke(['ablation', f'--outdir={out}', '--factors=recipe,no-such'] + TOY)
    assert result.exit_code == 2 and 'no-such is not one of' in result.output and 'Traceback' not in result.output


@pytest.mark.parametrize('args, message', [
    (['bias_curve', '--carriers=9'], 'outside 1..8'),
    (['bias_curve', '--variants=base,nope'], 'nope is not one of'),
    (['cosine', '--carrier=0,0', '--variants=fsg'], 'other than DC'),
    (['cosine', '--carrier=1'], 'is not FX,FY'),
])
def test_bad_arguments_are_one_sentence(tmp_path, args, message):
    result = invoke(args + [f'--outdir={tmp_path}'] + TOY)
    assert result.exit_code != 0 and message in result.output and 'Traceback' not in result.output
