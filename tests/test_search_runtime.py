"""The runtime settings (channels_last, amp, compile) reach the search as they reach the retrain."""

import pytest
import torch
from search_support import make_supernet, mnist, tiny_data  # noqa: F401  (fixture)

import bionas
from bionas.runtime import AUTO_AMP, AUTO_CHANNELS_LAST, AUTO_COMPILE, resolve_channels_last, resolve_compile
from bionas.spec import RuntimeSpec
from bionas.training import autocast


def test_channels_last_auto_is_the_measured_choice_of_the_device_type():
    assert RuntimeSpec().channels_last == "auto"
    for device in ("cpu", "cuda"):
        assert resolve_channels_last("auto", torch.device(device)) is AUTO_CHANNELS_LAST[device]
        # an explicit setting holds on every device: nothing is forced
        assert resolve_channels_last(False, torch.device(device)) is False
        assert resolve_channels_last(True, torch.device(device)) is True
    assert resolve_channels_last("auto", torch.device("meta")) is False  # a device type never measured


def test_amp_and_compile_auto_are_the_measured_choices_of_the_device_type(monkeypatch):
    assert RuntimeSpec().amp == "auto" and RuntimeSpec().compile == "auto"
    assert AUTO_AMP["cpu"] is False and AUTO_COMPILE["cpu"] is False  # both measured slower on the CPU
    for device in ("cpu", "cuda"):
        assert resolve_compile("auto", torch.device(device)) is AUTO_COMPILE[device]
        assert resolve_compile(True, torch.device(device)) is True
        assert resolve_compile(False, torch.device(device)) is False
    assert isinstance(autocast(torch.device("cpu"), "auto"), type(autocast(torch.device("cpu"), "off")))
    assert isinstance(autocast(torch.device("cpu"), "bf16"), torch.autocast)  # an explicit bf16 holds
    monkeypatch.setitem(AUTO_AMP, "cpu", True)  # autocast's `auto` is the table's entry for the device type
    assert isinstance(autocast(torch.device("cpu"), "auto"), torch.autocast)


@pytest.mark.parametrize("channels_last, amp, compiled", [(True, "bf16", True), (False, "off", False)])
def test_the_runtime_settings_reach_the_supernet(mnist, monkeypatch, channels_last, amp, compiled):
    made = []

    def fake_compile(model, **options):  # records what would be compiled, and runs it eagerly (fast)
        made.append(model)
        return lambda *args: (made.append("called"), model(*args))[1]

    monkeypatch.setattr(torch, "compile", fake_compile)
    darts = bionas.get_search("darts", batch_size=8)
    supernet = make_supernet(darts, mnist)
    runtime = bionas.Runtime(quiet=True, channels_last=channels_last, amp=amp, compile=compiled)
    run = darts.start(supernet, tiny_data(mnist, 8), runtime)
    darts.prepare(run)
    stem_conv = supernet.stem[0]
    seen = {}

    def record(module, args, output):
        # the stem's output: mnist's one-channel input is contiguous in both formats
        seen["channels_last"] = output.is_contiguous(memory_format=torch.channels_last) and not output.is_contiguous()
        seen["output dtype"] = output.dtype

    stem_conv.register_forward_hook(record)
    x, y = next(iter(run.loader))
    run.loss_and_logits(x, y)
    assert seen["channels_last"] is channels_last
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert all(p.is_contiguous(memory_format=layout) for p in supernet.weight_parameters() if p.dim() == 4)
    assert seen["output dtype"] == (torch.bfloat16 if amp == "bf16" else torch.float32)
    assert made == ([supernet, "called"] if compiled else [])
    # a forward at given mixing weights (one-hot samples, EG-NAS candidates) runs eagerly
    one_hot = {kind: torch.zeros_like(a) for kind, a in (("normal", supernet.alphas_normal),
                                                         ("reduce", supernet.alphas_reduce))}
    for w in one_hot.values():
        w[:, 1] = 1.0
    run.loss_and_logits(x, y, one_hot)
    assert made == ([supernet, "called"] if compiled else [])


def test_cuda_graphs_auto_is_on_for_cuda_only_and_true_off_cuda_is_a_spec_error():
    from bionas.errors import SpecError
    from bionas.runtime import AUTO_CUDA_GRAPHS, resolve_cuda_graphs

    assert RuntimeSpec().cuda_graphs == "auto"
    assert resolve_cuda_graphs("auto", torch.device("cuda")) is AUTO_CUDA_GRAPHS["cuda"] is True
    assert resolve_cuda_graphs("auto", torch.device("cpu")) is False
    assert resolve_cuda_graphs(False, torch.device("cuda")) is False
    with pytest.raises(SpecError, match="runtime.cuda_graphs: true needs a CUDA device"):
        resolve_cuda_graphs(True, torch.device("cpu"))
