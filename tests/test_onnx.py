"""rs3l export-onnx: encoders and a classifier as ONNX files that onnxruntime runs at any batch size and jet length."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from rs3l.cli import main as cli_main
from rs3l.resolve import resolve
from rs3l.models.classifier import MODEL_FILE, build_classifier
from rs3l.models.encoders import build_encoder, encoder_params
from rs3l.training.pretrain import load_encoder, save_encoder

CONFIG = str(Path(__file__).resolve().parents[1] / "config" / "config.yaml")
FEATURES = ["part_deta", "part_dphi", "part_log_pt", "part_log_e", "part_charge"]


def make_cfg(encoder="particlenet"):
    return resolve({"training": {"features": FEATURES, "max_constituents": 48}, "pretrain": {"encoder": encoder},
                    "encoders": {"particlenet": {"k": 4, "channels": [16, 16], "hidden": 32},
                                 "deepsets": {"hidden": 32}}})


@pytest.fixture(scope="module")
def cfg():
    return make_cfg()


def jets(batch, particles, seed):
    """Jets of 1..particles constituents (the first one full), features as in FEATURES."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, particles, len(FEATURES), generator=g)
    n = torch.randint(1, particles + 1, (batch,), generator=g)
    n[0] = particles
    return x, torch.arange(particles)[None, :] < n[:, None]


def warm_up(net):
    """A few training-mode passes, so that the batch norms' running statistics are not the identity."""
    net.train()
    with torch.no_grad():
        for s in range(3):
            net(*jets(16, 30, s))
    return net.eval()


def run_onnx(path, x, mask):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.numpy(), "mask": mask.numpy()})[0]


def assert_matches(path, net, shapes=((2, 3), (9, 37))):
    """onnxruntime == torch (atol, rtol 1e-5) at two batch sizes and particle counts; the largest |diff|."""
    worst = 0.0
    for i, (b, p) in enumerate(shapes):
        x, mask = jets(b, p, seed=50 + i)
        with torch.no_grad():
            ref = net.eval()(x, mask).numpy()
        out = run_onnx(path, x, mask)
        assert out.shape == ref.shape
        np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
        worst = max(worst, float(np.abs(out - ref).max()))
    return worst


@pytest.mark.parametrize("name", ["deepsets", "particlenet", "transformer"])
def test_exported_encoder_matches_torch_at_any_batch_and_jet_size(name, tmp_path, capsys):
    cfg = make_cfg(name)
    torch.manual_seed(0)
    save_encoder(tmp_path / "encoder.pt", warm_up(build_encoder(name, cfg, len(FEATURES))), cfg)
    out = tmp_path / f"{name}.onnx"
    assert cli_main(["export-onnx", "--config", CONFIG, "--encoder", str(tmp_path / "encoder.pt"),
                     "--out", str(out)]) == 0
    assert "onnxruntime matches torch" in capsys.readouterr().out
    model = onnx.load(str(out))
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert set(inputs) == {"x", "mask"} and [o.name for o in model.graph.output] == ["embedding"]
    assert inputs["x"].elem_type == onnx.TensorProto.FLOAT and inputs["mask"].elem_type == onnx.TensorProto.BOOL
    assert [bool(d.dim_param) for d in inputs["x"].shape.dim] == [True, True, False]  # batch, particles dynamic
    encoder, _ = load_encoder(tmp_path / "encoder.pt")
    # 3 particles: fewer than ParticleNet's k + 1, so some neighbour slots are empty
    diff = assert_matches(out, encoder)
    print(f"{name}: max |onnx - torch| = {diff:.2e}")
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_exported_classifier_gives_the_logits(cfg, tmp_path):
    torch.manual_seed(1)
    params = encoder_params("particlenet", cfg)
    net = warm_up(build_classifier("particlenet", params, len(FEATURES), "mlp", 3, 16))
    meta = {"encoder": "particlenet", "encoder_params": params, "n_features": len(FEATURES), "features": FEATURES,
            "head": "mlp", "n_outputs": 3, "head_hidden": 16}  # the keys of `rs3l finetune`'s model.pt
    (tmp_path / "model").mkdir()
    torch.save({"state_dict": net.state_dict(), **meta}, tmp_path / "model" / MODEL_FILE)
    out = tmp_path / "classifier.onnx"
    assert cli_main(["export-onnx", "--config", CONFIG, "--model-dir", str(tmp_path / "model"), "--out", str(out)]) == 0
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["logits"]
    diff = assert_matches(out, net)
    print(f"classifier: max |onnx - torch| = {diff:.2e}")
    # padding never matters, in the ONNX graph too
    x, mask = jets(4, 12, seed=7)
    x2 = x.clone()
    x2[~mask] = 1e6
    np.testing.assert_allclose(run_onnx(out, x2, mask), run_onnx(out, x, mask), atol=1e-5, rtol=1e-5)


def test_bad_requests_write_nothing(tmp_path, capsys):
    cfg = make_cfg("deepsets")
    save_encoder(tmp_path / "encoder.pt", build_encoder("deepsets", cfg, len(FEATURES)), cfg)
    out = tmp_path / "x.onnx"
    assert cli_main(["export-onnx", "--config", CONFIG, "--out", str(out)]) == 2
    assert "give exactly one of --model-dir" in capsys.readouterr().err
    tcfg = make_cfg("particle_transformer")
    save_encoder(tmp_path / "part.pt", build_encoder("particle_transformer", tcfg, len(FEATURES)), tcfg)
    assert cli_main(["export-onnx", "--config", CONFIG, "--encoder", str(tmp_path / "part.pt"),
                     "--out", str(out)]) == 2
    assert ("cannot export a ParticleTransformer encoder to ONNX (its pair features need float64" in capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.pt", "part.pt"]
