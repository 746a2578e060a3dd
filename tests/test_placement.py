"""The placement rule and the IO manager that enforces it for every asset."""

from pathlib import Path

import dagster as dg
import pytest
from helpers import tier_folders

from dsa110_assets.storage import Tier, WrongTierError, check_placement, product_path
from resources.io_managers import TierIOManager
from resources.pipeline import PipelineResource


@pytest.fixture
def pipeline(tmp_path: Path) -> PipelineResource:
    return PipelineResource(**tier_folders(tmp_path))


@pytest.mark.parametrize(
    ("kind", "tier"),
    [
        ("ms", Tier.SSD_PRODUCTS),
        ("images", Tier.SSD_PRODUCTS),
        ("caltables", Tier.SSD_PRODUCTS),
        ("mosaics", Tier.SSD_PRODUCTS),
        ("photometry", Tier.SSD_PRODUCTS),
        ("catalogs", Tier.HDD_STATE),
        ("archive", Tier.COLD_ARCHIVE),
    ],
)
def test_products_go_to_their_tier(pipeline, kind: str, tier: Tier) -> None:
    settings = pipeline.settings()
    assert check_placement(settings, kind, product_path(settings, kind, "2026-01-15")) is tier


@pytest.mark.parametrize(
    ("kind", "where"),
    [
        ("images", "tmpfs_dir"),
        ("ms", "state_dir"),
        ("raw", "scratch_dir"),
        ("mosaics", "input_dir"),
    ],
)
def test_a_product_on_the_wrong_tier_is_refused(pipeline, kind: str, where: str) -> None:
    settings = pipeline.settings()
    path = Path(getattr(settings, where)) / "x.fits"
    with pytest.raises(WrongTierError, match=f"refusing to place {kind}.*belongs on"):
        check_placement(settings, kind, path)


def _asset(metadata: dict, make):
    @dg.asset(
        partitions_def=dg.StaticPartitionsDefinition(["2026-01-15"]),
        io_manager_key="tier_io_manager",
        metadata=metadata,
    )
    def product(context: dg.AssetExecutionContext, pipeline: PipelineResource):
        return make(pipeline.settings(), context.partition_key)

    return product


def _materialize(pipeline: PipelineResource, *assets):
    return dg.materialize(
        list(assets),
        partition_key="2026-01-15",
        resources={"pipeline": pipeline, "tier_io_manager": TierIOManager(pipeline=pipeline)},
        raise_on_error=False,
    )


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_the_io_manager_checks_patterns_and_lists_and_loads_them(pipeline) -> None:
    meta = {"dsa110/kind": "images", "dsa110/pattern": "{partition}-*-image.fits"}
    images = _asset(
        meta,
        lambda s, p: _touch(product_path(s, "images", f"{p}-meridian_icrs_t12-image.fits")),
    )

    @dg.asset(
        partitions_def=dg.StaticPartitionsDefinition(["2026-01-15"]),
        io_manager_key="tier_io_manager",
        metadata={"dsa110/kind": "thumbnails", "dsa110/suffix": ".png"},
    )
    def preview(product: Path, pipeline: PipelineResource) -> Path:
        assert product.name == "2026-01-15-meridian_icrs_t12-image.fits"  # found by pattern
        return _touch(product_path(pipeline.settings(), "thumbnails", "2026-01-15", ".png"))

    result = _materialize(pipeline, images, preview)
    assert result.success
    listed = _asset(
        {"dsa110/kind": "caltables", "dsa110/pattern": "{partition}_*cal"},
        lambda s, p: [
            _touch(product_path(s, "caltables", f"{p}_3C286{x}")) for x in (".bcal", ".gcal")
        ],
    )
    result = _materialize(pipeline, listed)
    assert result.success
    (event,) = result.get_asset_materialization_events()
    assert len(event.materialization.metadata["paths"].value) == 2


def _cause(result) -> str:
    """Return the WrongTierError behind the step's handle-output failure."""
    error = result.get_step_failure_events()[0].step_failure_data.error
    while error.cause is not None and error.cls_name != "WrongTierError":
        error = error.cause
    assert error.cls_name == "WrongTierError"
    return error.message


def test_the_io_manager_refuses_a_misnamed_or_misplaced_product(pipeline) -> None:
    misnamed = _asset(
        {"dsa110/kind": "images", "dsa110/pattern": "{partition}-*-image.fits"},
        lambda s, p: _touch(product_path(s, "images", "someone-else-image.fits")),
    )
    result = _materialize(pipeline, misnamed)
    assert not result.success
    assert "must be at" in _cause(result)

    misplaced = _asset(
        {"dsa110/kind": "mosaics", "dsa110/suffix": ".fits"},
        lambda s, p: [_touch(Path(s.tmpfs_dir) / f"{p}.fits")],
    )
    result = _materialize(pipeline, misplaced)
    assert not result.success
    assert "refusing to place mosaics" in _cause(result)
