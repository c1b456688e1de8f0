"""Loading a 1024 px StyleGAN2 network pickle (G, D, G_ema: about 380 MB) safely, against
`torch.load(weights_only=True)` of the same tensors. Prints JSON; ratios come from one run with
the three loads interleaved (median of --reps repetitions each).

    python bench/bench_checkpoint.py [--reps 5] [--resolution 1024] [--workdir DIR]

Files compared:
  stylefreq   network-snapshot.pkl as train.py writes it (stylefreq records)
  upstream    the same networks as upstream-format persistent objects (python -m stylefreq.export)
  torch.load  a torch.save() zip of the three state dicts (no networks rebuilt: the lower bound)
"""

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time

import torch

from stylefreq import checkpoint, export
from training import networks


def build_networks(resolution):
    torch.manual_seed(0)
    common = dict(c_dim=0, img_resolution=resolution, img_channels=3)
    G = networks.Generator(z_dim=512, w_dim=512, mapping_kwargs=dict(num_layers=8),
                           synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256),
                           **common)
    D = networks.Discriminator(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256, **common)
    return dict(G=G.eval(), D=D.eval(), G_ema=copy.deepcopy(G).eval(), augment_pipe=None,
                training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path='ffhq.zip',
                                         resolution=resolution))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--resolution', type=int, default=1024)
    parser.add_argument('--workdir', default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        data = build_networks(args.resolution)
        paths = dict(stylefreq=os.path.join(tmp, 'snapshot.pkl'), upstream=os.path.join(tmp, 'upstream.pkl'),
                     torch_load=os.path.join(tmp, 'state.pt'))
        checkpoint.save_network_pkl(paths['stylefreq'], data)
        export.export_network_pkl(data, paths['upstream'])
        torch.save({k: data[k].state_dict() for k in ('G', 'D', 'G_ema')}, paths['torch_load'])
        del data
        loaders = dict(stylefreq=lambda p: checkpoint.load_network_pkl(p, verbose=False),
                       upstream=lambda p: checkpoint.load_network_pkl(p, verbose=False),
                       torch_load=lambda p: torch.load(p, weights_only=True))
        for name, load in loaders.items():            # warm-up: imports, page cache
            load(paths[name])
        times = {name: [] for name in loaders}
        for _ in range(args.reps):
            for name, load in loaders.items():
                start = time.perf_counter()
                result = load(paths[name])
                times[name].append(time.perf_counter() - start)
                del result
        med = {name: statistics.median(t) for name, t in times.items()}
        print(json.dumps(dict(
            bench='checkpoint_load', resolution=args.resolution, reps=args.reps, torch=torch.__version__,
            machine=platform.machine(), load_average=os.getloadavg(),
            file_mb={name: round(os.path.getsize(p) / 1e6, 1) for name, p in paths.items()},
            seconds_median={k: round(v, 4) for k, v in med.items()},
            seconds_all={k: [round(x, 4) for x in v] for k, v in times.items()},
            ratio_to_torch_load={k: round(med[k] / med['torch_load'], 3) for k in ('stylefreq', 'upstream')},
        ), indent=1))


if __name__ == '__main__':
    main()
