"""The baseline we train IS Open-Unmix (openunmix.model.OpenUnmix), imported without torchaudio."""
from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from iass.training.presets import resolve_umx
from iass.training.umx import UMXModel, import_openunmix

CFG = {"n_fft": 512, "hop": 256, "sample_rate": 44100, "hidden_size": 32, "nb_channels": 2,
       "nb_layers": 3, "unidirectional": False, "bandwidth_hz": 16000.0, "max_bin": 186}


def test_import_leaves_no_fake_torchaudio_behind():
    code = ("import sys, importlib.util\n"
            "from iass.training.umx import import_openunmix\n"
            "ou = import_openunmix()\n"
            "real = importlib.util.find_spec('torchaudio') is not None\n"
            "print(ou.model.OpenUnmix.__module__, 'torchaudio' in sys.modules, real)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    module, present, real = out.stdout.split()
    assert module == "openunmix.model"
    # the stand-in lives in sys.modules only during the import
    assert present == real


def test_the_class_is_open_unmix_from_the_installed_package():
    ou = import_openunmix()
    model = UMXModel(["vocals"], CFG)
    net = model.models["vocals"]
    assert type(net) is ou.model.OpenUnmix
    source = Path(inspect.getsourcefile(type(net)))
    assert source.parts[-2:] == ("openunmix", "model.py") and "site-packages" in source.parts


def test_same_state_dict_keys_and_shapes_as_open_unmix():
    ou = import_openunmix()
    ours = UMXModel(["vocals", "bass"], CFG)
    ref = ou.model.OpenUnmix(nb_bins=257, nb_channels=2, hidden_size=32, nb_layers=3, max_bin=186)
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    for target in ("vocals", "bass"):
        shapes = {k: tuple(v.shape) for k, v in ours.models[target].state_dict().items()}
        assert shapes == ref_shapes
    assert set(ours.state_dict()) == {f"models.{t}.{k}" for t in ("vocals", "bass") for k in ref_shapes}


def reference_forward(sd: dict, x: torch.Tensor, hidden: int, nb_layers: int, max_bin: int) -> torch.Tensor:
    """Open-Unmix's forward written out from its paper/README equations (eval mode), from the
    state dict alone: fc1-bn1-tanh, 3-layer BLSTM with skip, fc2-bn2-relu, fc3-bn3, output
    scale/mean, relu x mixture."""
    def bnorm(h, name):
        return F.batch_norm(h, sd[f"{name}.running_mean"], sd[f"{name}.running_var"],
                            sd[f"{name}.weight"], sd[f"{name}.bias"], training=False, eps=1e-5)

    B, C, Fb, T = x.shape
    frames = x.permute(3, 0, 1, 2)                                    # (T, B, C, F)
    h = (frames[..., :max_bin] + sd["input_mean"]) * sd["input_scale"]
    h = bnorm(h.reshape(T * B, C * max_bin) @ sd["fc1.weight"].T, "bn1")
    h = torch.tanh(h).reshape(T, B, hidden)
    lstm = torch.nn.LSTM(hidden, hidden // 2, num_layers=nb_layers, bidirectional=True)
    lstm.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("lstm.")})
    out, _ = lstm.eval()(h)
    h = torch.cat([h, out], -1).reshape(T * B, 2 * hidden)
    h = F.relu(bnorm(h @ sd["fc2.weight"].T, "bn2"))
    h = bnorm(h @ sd["fc3.weight"].T, "bn3").reshape(T, B, C, Fb)
    h = h * sd["output_scale"] + sd["output_mean"]
    return (F.relu(h) * frames).permute(1, 2, 3, 0)


def test_same_output_for_the_same_weights():
    ou = import_openunmix()
    torch.manual_seed(0)
    ours = UMXModel(["vocals", "drums"], CFG).eval()
    ref = ou.model.OpenUnmix(nb_bins=257, nb_channels=2, hidden_size=32, nb_layers=3, max_bin=186).eval()
    mix = torch.rand(3, 2, 257, 11)
    for k, target in enumerate(("vocals", "drums")):
        ref.load_state_dict(ours.models[target].state_dict())
        with torch.no_grad():
            est, logits = ours(mix)
            expected = ref(mix)
            written = reference_forward(ours.models[target].state_dict(), mix, 32, 3, 186)
        assert logits is None
        torch.testing.assert_close(est[:, k], expected, rtol=0, atol=0)
        torch.testing.assert_close(est[:, k], written, rtol=1e-5, atol=1e-5)


def test_input_statistics_use_open_unmix_convention():
    ours = UMXModel(["vocals"], CFG)
    mean, std = torch.rand(257) + 1, torch.rand(257) + 2
    ours.set_input_statistics(mean, std)
    ou = import_openunmix()
    # OpenUnmix's constructor: input_mean = -mean[:max_bin], input_scale = 1 / std[:max_bin]
    ref = ou.model.OpenUnmix(nb_bins=257, nb_channels=2, hidden_size=32, max_bin=186,
                             input_mean=mean.numpy(), input_scale=std.numpy())
    torch.testing.assert_close(ours.models["vocals"].input_mean, ref.input_mean)
    torch.testing.assert_close(ours.models["vocals"].input_scale, ref.input_scale)


def test_resolved_config_defaults_to_open_unmix():
    cfg = resolve_umx({}, {"n_fft": 4096}, 44100, 1024)
    assert cfg["hidden_size"] == 512 and cfg["nb_layers"] == 3 and cfg["max_bin"] == 1487
    full = UMXModel(["vocals"], cfg)
    # Open-Unmix's published size for its default configuration: 8.9 M parameters per target
    assert 8.8e6 < sum(p.numel() for p in full.parameters()) < 9.0e6


def test_open_unmix_data_loads_audio_through_the_stand_in(tmp_path):
    """openunmix.data reads WAVs (bench/bench_loader.py runs its dataset): the stand-in's load/info."""
    import numpy as np
    import soundfile as sf

    ou = import_openunmix()
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, (1000, 2)).astype(np.float32)
    sf.write(tmp_path / "a.wav", audio, 44100, subtype="FLOAT")
    info = ou.data.load_info(tmp_path / "a.wav")
    assert info["samples"] == 1000 and info["samplerate"] == 44100 and info["channels"] == 2
    sig, rate = ou.data.load_audio(tmp_path / "a.wav", start=100 / 44100, dur=200 / 44100, info=info)
    assert rate == 44100 and sig.shape == (2, 200)
    np.testing.assert_array_equal(sig.numpy(), audio[100:300].T)
