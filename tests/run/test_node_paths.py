"""The per-node path check: what a node cannot see is one error line naming the path and
the node; the driver's own node and URIs cost nothing."""

from __future__ import annotations

import pytest

from raytda.run.node_paths import (
    NodePath,
    PathNotOnNode,
    check_paths_on_nodes,
    data_paths,
    missing_here,
    store_path,
)
from raytda.tasks import get_task


def test_a_store_passes_where_it_can_be_created_and_data_only_where_it_exists(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "a-file").write_text("")
    ok = [NodePath(str(tmp_path / "new" / "store"), "store", creatable=True),
          NodePath(str(tmp_path / "data"), "data directory of x", creatable=False)]
    assert missing_here(ok) == []
    bad = missing_here([NodePath(str(tmp_path / "a-file" / "store"), "store", True),
                        NodePath(str(tmp_path / "nodata"), "data directory of x", False)])
    assert bad == [f"store {tmp_path}/a-file/store cannot be created ({tmp_path}/a-file is "
                   f"not a directory)", f"data directory of x {tmp_path}/nodata does not exist"]


def test_uris_and_unread_data_directories_are_not_checked(tmp_path):
    assert store_path("s3://bucket/prefix") == []
    assert store_path(str(tmp_path)) == [NodePath(str(tmp_path), "store", creatable=True)]
    assert store_path(str(tmp_path), must_exist=True)[0].creatable is False
    # toy-mlp reads no files: a --data-dir given to it is ignored, so not checked.
    assert data_paths([get_task("toy-mlp", data_dir=str(tmp_path))]) == []
    mnist = get_task("mnist-mlp", data_dir=str(tmp_path))
    assert data_paths([mnist, mnist]) == [NodePath(str(tmp_path), "data directory of "
                                                   "mnist-mlp", creatable=False)]
    # Missing on the driver: the task's own one-line error there, not a node's.
    assert data_paths([get_task("mnist-mlp", data_dir=str(tmp_path / "no"))]) == []


@pytest.mark.ray
def test_a_path_a_node_cannot_see_is_one_line_naming_it(ray_session, tmp_path):
    seen = NodePath(str(tmp_path), "data directory of mnist-mlp", creatable=False)
    check_paths_on_nodes([seen], skip_own_node=False)  # every node sees it: no error
    check_paths_on_nodes([NodePath(str(tmp_path / "gone"), "store", False)])  # own node only
    with pytest.raises(PathNotOnNode) as err:
        check_paths_on_nodes([seen, NodePath(str(tmp_path / "gone"), "store", False)],
                             skip_own_node=False)
    msg = str(err.value)
    assert msg.startswith(f"store {tmp_path}/gone does not exist on Ray node ")
    assert "\n" not in msg and "s3://" in msg
