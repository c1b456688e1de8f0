"""Hostile statistics-cache files: every one is rejected (so the metric recomputes and replaces it)
quickly and without reading more than the file holds; a valid file still loads."""

import json
import os
import pickle
import resource
import time
import zipfile

import numpy as np
import pytest

from stylefreq import feature_stats


def valid_stats():
    st = feature_stats.FeatureStats(capture_mean_cov=True, capture_all=True, max_items=10)
    st.append(np.arange(12, dtype=np.float32).reshape(4, 3))
    return {'features': st}


def npz_with(path, header=None, **arrays):
    """A statistics file whose header and arrays are exactly as given."""
    if header is not None:
        arrays['header'] = np.array(json.dumps(header))
    with open(path, 'wb') as f:
        np.savez(f, **arrays)
    return path


def good_header(**overrides):
    fields = dict(capture_all=True, capture_mean_cov=True, capture_mean=True, max_items=10, num_items=4,
                  num_features=3)
    fields.update(overrides)
    return dict(format=feature_stats.STATS_FORMAT, stats=dict(features=fields))


def good_arrays(n=4, F=3):
    return {'features.all_features': np.zeros([n, F], np.float32), 'features.raw_mean': np.zeros([F]),
            'features.raw_cov': np.zeros([F, F])}


def hostile_files(d):
    files = {}
    # A 1 GiB member that deflates from about 1 MB: a decompression bomb.
    bomb = d / 'bomb.npz'
    with zipfile.ZipFile(bomb, 'w', zipfile.ZIP_DEFLATED) as zf:
        with zf.open('header.npy', 'w', force_zip64=True) as member:
            chunk = b'\0' * (1 << 20)
            for _ in range(1024):
                member.write(chunk)
    files['decompression_bomb'] = bomb
    # A stored member whose directory entry claims 3 GiB.
    liar = npz_with(d / 'liar.npz', good_header(), **good_arrays())
    raw = bytearray(liar.read_bytes())
    with zipfile.ZipFile(liar) as zf:
        info = zf.getinfo('header.npy')
    central = raw.rfind(b'PK\x01\x02')                       # last central directory entry: header.npy
    raw[central + 24:central + 28] = (3 << 30).to_bytes(4, 'little')
    liar.write_bytes(bytes(raw))
    assert info.file_size < 1 << 20
    files['lying_member_size'] = liar
    files['stats_is_a_list'] = npz_with(d / 'list.npz', dict(format=feature_stats.STATS_FORMAT, stats=[1, 2]))
    files['num_items_inf'] = npz_with(d / 'inf.npz', good_header(num_items=float('inf')), **good_arrays())
    files['raw_mean_wrong_shape'] = npz_with(d / 'shape.npz', good_header(),
                                             **dict(good_arrays(), **{'features.raw_mean': np.zeros([5])}))
    files['nan_in_covariance'] = npz_with(d / 'nan.npz', good_header(),
                                          **dict(good_arrays(), **{'features.raw_cov': np.full([3, 3], np.nan)}))
    files['huge_feature_count'] = npz_with(d / 'wide.npz', good_header(num_features=10**9), **good_arrays())
    files['items_beyond_max'] = npz_with(d / 'many.npz', good_header(num_items=11), **good_arrays(n=11))
    files['extra_member'] = npz_with(d / 'extra.npz', good_header(), extra=np.zeros(2), **good_arrays())
    files['wrong_format'] = npz_with(d / 'fmt.npz', dict(good_header(), format='other'), **good_arrays())
    obj = d / 'object.npz'
    with open(obj, 'wb') as f:                       # an object array can only be read by unpickling
        np.savez(f, header=np.array([dict(a=1)], dtype=object))
    files['object_array'] = obj
    evil = d / 'pickle.npz'
    evil.write_bytes(pickle.dumps(dict(format=feature_stats.STATS_FORMAT)))
    files['plain_pickle'] = evil
    trunc = npz_with(d / 'trunc.npz', good_header(), **good_arrays())
    trunc.write_bytes(trunc.read_bytes()[:200])
    files['truncated'] = trunc
    files['empty'] = d / 'empty.npz'
    files['empty'].write_bytes(b'')
    return files


@pytest.fixture(scope='module')
def hostile(tmp_path_factory):
    return hostile_files(tmp_path_factory.mktemp('caches'))


@pytest.mark.parametrize('name', ['decompression_bomb', 'lying_member_size', 'stats_is_a_list', 'num_items_inf',
                                  'raw_mean_wrong_shape', 'nan_in_covariance', 'huge_feature_count',
                                  'items_beyond_max', 'extra_member', 'wrong_format', 'object_array',
                                  'plain_pickle', 'truncated', 'empty'])
def test_hostile_cache_is_rejected_quickly(hostile, name):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    assert feature_stats.load_stats_file(str(hostile[name])) is None
    assert time.monotonic() - start < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024     # KiB: nothing big read


def test_valid_cache_roundtrip(tmp_path):
    path = str(tmp_path / 'ok.npz')
    feature_stats.save_stats_file(path, valid_stats())
    loaded = feature_stats.load_stats_file(path)
    st = loaded['features']
    assert st.num_items == 4 and st.num_features == 3 and st.max_items == 10
    np.testing.assert_array_equal(st.get_all(), np.arange(12, dtype=np.float32).reshape(4, 3))
    mean, cov = st.get_mean_cov()
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.testing.assert_allclose(mean, x.mean(0))
    np.testing.assert_allclose(cov, np.cov(x.T, bias=True))
    assert sorted(os.listdir(tmp_path)) == ['ok.npz']


def test_the_good_builders_are_valid(tmp_path):
    """Control: the hostile files above differ from a loadable file only in what they break."""
    assert feature_stats.load_stats_file(str(npz_with(tmp_path / 'g.npz', good_header(), **good_arrays()))) is not None
