"""JEPA: an EMA target encoder that gets no gradient, a predictor, and VICReg variance/covariance
terms on the context embeddings against collapse; encoder.pt stays the context encoder."""

import lightning as L
import pytest
import torch

from rs3l.models import objectives
from rs3l.models.classifier import read_encoder_checkpoint
from rs3l.models.encoders import build_encoder
from rs3l.models.method import JEPAMethod
from rs3l.models.methods import build_method
from rs3l.training.pretrain import load_encoder, run
from synthetic import make_config, make_dataset

F = 3  # features of the random jets


def random_batch(gen, n=64, P=12, views=2):
    """Random 'jets': n rows of P constituents with F features, random multiplicities; views independent."""
    batch = {}
    for k in range(views):
        x = torch.randn(n, P, F, generator=gen)
        mask = torch.arange(P)[None, :] < torch.randint(3, P + 1, (n, 1), generator=gen)
        batch[f"x{k + 1}"], batch[f"mask{k + 1}"] = x * mask[..., None], mask
    batch["label"] = torch.zeros(n, dtype=torch.long)
    return batch


def jepa_method(ema=0.9, **weights) -> JEPAMethod:
    cfg = {"encoders": {"deepsets": {"hidden": 32, "latent_dim": 8}}, "training": {"features": ["a"] * F}}
    torch.manual_seed(0)
    loss = objectives.objective_from_config({"pretrain": {"objective": "jepa", "jepa_weights": weights}})
    return JEPAMethod(build_encoder("deepsets", cfg, F), loss, learning_rate=3e-3, ema_momentum=ema,
                      predictor_hidden=16)


def test_target_encoder_gets_no_gradient_and_follows_the_ema():
    """Backward reaches the context encoder and predictor, never the target; the update is
    target = m * target + (1 - m) * context."""
    model = jepa_method()
    assert all(not p.requires_grad for p in model.target_encoder.parameters())
    assert all(torch.equal(a, b) for a, b in zip(model.target_encoder.parameters(), model.encoder.parameters()))
    batch = random_batch(torch.Generator().manual_seed(1))
    model._loss(batch, *model._embed_views(batch)).backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.predictor.parameters())
    # move the context encoder, then one EMA update
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p))
    old = [p.clone() for p in model.target_encoder.parameters()]
    model.update_target(0.9)
    for t, o, c in zip(model.target_encoder.parameters(), old, model.encoder.parameters()):
        torch.testing.assert_close(t, 0.9 * o + 0.1 * c)


class CheckEMA(L.Callback):
    """After each optimiser step (callback hooks run before the module's), remember the expected
    target; at the next batch check that the module's EMA update produced it."""

    def __init__(self):
        self.expected, self.checked, self.momenta = None, 0, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        m = pl_module.momentum()
        self.momenta.append(m)
        self.expected = [m * t.detach().clone() + (1 - m) * c.detach()
                         for t, c in zip(pl_module.target_encoder.parameters(), pl_module.encoder.parameters())]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.expected is not None:
            for t, e in zip(pl_module.target_encoder.parameters(), self.expected):
                torch.testing.assert_close(t.detach(), e)
            self.checked += 1


def test_ema_update_after_each_optimiser_step_in_lightning():
    """In a Lightning fit the target follows the EMA of the trained encoder, with a momentum
    rising from ema_momentum to 1 (cosine) over the steps."""
    gen = torch.Generator().manual_seed(2)
    batches = [random_batch(gen, n=32) for _ in range(6)]
    model = jepa_method(ema=0.9)
    check = CheckEMA()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[check])
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    assert check.checked == 5
    assert check.momenta[0] > 0.9 and check.momenta == sorted(check.momenta) and check.momenta[-1] == 1.0
    assert not all(torch.equal(a, b) for a, b in zip(model.target_encoder.parameters(), model.encoder.parameters()))


def test_collapsed_embedding_costs_more_than_a_spread_one():
    """A constant context embedding (whose targets are trivially predicted) has a higher loss than a
    spread one predicted just as well: the VICReg variance term; without it collapse would be a minimum."""
    gen = torch.Generator().manual_seed(3)
    spread = torch.randn(256, 8, generator=gen)
    collapsed = torch.ones(256, 8)
    loss = objectives.jepa
    assert loss([collapsed], [collapsed], collapsed) > loss([spread], [spread], spread) + 0.9
    assert loss([collapsed], [collapsed], collapsed, variance=0.0) == pytest.approx(0.0, abs=1e-6)
    # a wrong prediction costs: 2 - 2 cos per row
    assert loss([spread], [-spread], spread, variance=0, covariance=0) == pytest.approx(4.0, rel=1e-5)


def test_training_on_random_data_does_not_collapse():
    """300 steps of JEPA on random jets: every embedding dimension keeps a standard deviation well above 0."""
    gen = torch.Generator().manual_seed(4)
    model = jepa_method(ema=0.99)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(300):
        batch = random_batch(gen, n=32, P=8)
        loss = model._loss(batch, *model._embed_views(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_target(0.99)
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        b = random_batch(gen, n=512)
        z = model.encoder(b["x1"], b["mask1"])
    assert z.std(dim=0).min() > 0.3, z.std(dim=0)
    assert sum(losses[-20:]) < sum(losses[:20])


def test_objective_jepa_in_the_pretrain_stage_writes_the_context_encoder(tmp_path):
    """rs3l pretrain with objective jepa on hand-crafted views only (augment_views [jetclr]): encoder.pt
    is the context encoder, readable by fine-tuning, without target or predictor weights."""
    data = make_dataset(tmp_path / "data", n_jets_per_split={"train": 128, "val": 64, "test": 0}, seed=2)
    cfg = make_config(tmp_path / "results", pretrain={"objective": "jepa", "augment_views": ["jetclr"], "epochs": 1,
                                                      "probe_jets": 64})
    assert isinstance(build_method(cfg, 15), JEPAMethod)
    s = run(cfg, data, tmp_path / "out")
    assert s["epochs_trained"] == 1 and s["final_metrics"]["train/loss"] > 0
    info = read_encoder_checkpoint(tmp_path / "out" / "encoder.pt", cfg)
    enc = build_encoder("deepsets", cfg, 15)
    assert set(info["state_dict"]) == set(enc.state_dict())
    encoder, _ = load_encoder(tmp_path / "out" / "encoder.pt")
    assert encoder.latent_dim == 8
