"""Hostile network pickles (tests/security/corpus.py): each is refused with one sentence naming the
file, nothing runs, and loading stays within bounded time and memory.

The loads run in a subprocess under an address-space limit (RLIMIT_AS), so an allocation bomb fails
the test instead of the machine. The same corpus goes through generate.py and calc_metrics.py in
test_hostile_front_ends.py.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from security import corpus

ADDRESS_SPACE = 2 << 30     # bytes; importing torch needs about 0.8 GB of address space
PER_FILE_SECONDS = 20

DRIVER = textwrap.dedent('''
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
    from stylefreq import checkpoint
    results = {}
    for name, path in json.loads(sys.argv[2]).items():
        start = time.monotonic()
        try:
            checkpoint.load_network_pkl(path, verbose=False)
            outcome = ('loaded', '')
        except checkpoint.CheckpointError as e:
            outcome = (type(e).__name__, str(e))
        except BaseException as e:                      # anything else is a finding
            outcome = ('UNEXPECTED ' + type(e).__name__, str(e)[:500])
        results[name] = dict(kind=outcome[0], message=outcome[1], seconds=time.monotonic() - start)
    print(json.dumps(results))
''')


@pytest.fixture(scope='module')
def hostile(tmp_path_factory):
    directory = tmp_path_factory.mktemp('hostile')
    marker = directory / 'MARKER'
    return corpus.build(directory, marker), marker


@pytest.fixture(scope='module')
def outcomes(hostile):
    cases, marker = hostile
    proc = subprocess.run([sys.executable, '-c', DRIVER, str(ADDRESS_SPACE),
                           json.dumps({name: case.path for name, case in cases.items()})],
                          capture_output=True, text=True, timeout=PER_FILE_SECONDS * len(cases),
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('name', corpus.NAMES)
def test_refused_in_one_sentence_with_nothing_run(name, hostile, outcomes):
    cases, marker = hostile
    result = outcomes[name]
    case = cases[name]
    assert result['kind'] in ('UnsafePickleError', 'UnsupportedPickleError', 'RebuildError'), result
    message = result['message']
    assert case.path in message, message                      # names the file
    assert case.refusal in message, message                   # and says why
    assert '\n' not in message and 'Traceback' not in message
    assert result['seconds'] < PER_FILE_SECONDS
    assert not marker.exists()


def test_every_corpus_file_is_checked(hostile):
    cases, _ = hostile
    assert sorted(cases) == sorted(corpus.NAMES)


def test_the_payloads_are_live(tmp_path):
    """Control: the attribute-walk route of the corpus does execute code under naive resolution."""
    marker = tmp_path / 'RAN'
    assert corpus.live_controls(tmp_path, marker)


def test_a_valid_network_still_loads(tmp_path):
    from stylefreq import checkpoint
    G = corpus.tiny_generator_record()
    checkpoint.save_network_pkl(tmp_path / 'ok.pkl', dict(G=G, D=None, G_ema=G))
    data = checkpoint.load_network_pkl(tmp_path / 'ok.pkl', verbose=False)
    assert type(data['G_ema']) is type(G)
