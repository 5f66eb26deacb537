"""The host-read and operator-list checks of tests/sync_support.py work as the step tests rely on."""

import pytest
import torch

from sync_support import HostSyncError, forbid_host_syncs, record_ops


def test_forbid_host_syncs_catches_item_and_data_dependent_shapes():
    x = torch.randn(4)
    with pytest.raises(HostSyncError, match="_local_scalar_dense"), forbid_host_syncs():
        x.sum().item()
    with pytest.raises(HostSyncError), forbid_host_syncs():
        bool(x.sum() > 0)
    with pytest.raises(HostSyncError, match="nonzero"), forbid_host_syncs():
        x.nonzero()
    with forbid_host_syncs():
        torch.where(x > 0, x, -x).sum()  # no read: fine


def test_record_ops_lists_operators():
    with record_ops() as names:
        torch.randn(3).relu().sum()
    assert "aten::relu" in names and "aten::sum" in names
