"""The inference copy: BatchNorm folded, channels_last, same outputs, the model left alone."""

from __future__ import annotations

import torch

from zapmulti.model.heads import HeadSpec
from zapmulti.model.multitask import build_model, for_inference


def test_inference_copy_matches_and_leaves_the_model_alone():
    torch.manual_seed(0)
    specs = [HeadSpec("gender", ["Men", "Women"]), HeadSpec("kind", list("abcd"))]
    model = build_model("resnet18", "none", specs)
    # Non-trivial BatchNorm statistics, as a trained model has.
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8))
    before = {k: v.clone() for k, v in model.state_dict().items()}

    fast = for_inference(model)
    assert model.training  # the caller's model keeps its mode, weights and modules
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.body.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.body.modules())  # folded
    assert not fast.training

    x = torch.randint(0, 255, (6, 32, 32, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
    model.eval()
    with torch.inference_mode():
        for slow_out, fast_out in zip(model(x), fast(x), strict=True):
            torch.testing.assert_close(fast_out, slow_out, rtol=1e-4, atol=1e-4)
            assert torch.equal(fast_out.argmax(1), slow_out.argmax(1))
