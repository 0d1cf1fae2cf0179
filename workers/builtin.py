"""The built-in tasks; ``python -m workers`` runs this registry by default."""

from __future__ import annotations

from . import images
from .context import TaskContext
from .errors import InvalidInput
from .image_contracts import ThumbnailRequest
from .registry import TaskRegistry

registry = TaskRegistry()


@registry.task("images.thumbnail")
async def thumbnail(ctx: TaskContext, request: ThumbnailRequest) -> dict[str, object]:
    """Thumbnails of a stored image as WebP and JPEG under ``<task_id>/`` in the store."""
    settings = ctx.settings
    sizes_px = tuple(request.options.sizes_px or settings.thumbnail_sizes)
    if not sizes_px:
        raise InvalidInput("no thumbnail sizes requested")
    # One pool job checks the header, decodes and renders, reporting each step: a separate
    # probe on a thread would cost the loop more than the check is worth (the gateway
    # probed at upload, and the job checks again before decoding).
    async with ctx.local_input(request.file) as source, ctx.local_outputs() as out_dir:
        # render_thumbnails creates out_dir, off the loop.
        rendering = await ctx.run_in_process(
            images.render_thumbnails,
            str(source),
            str(out_dir),
            sizes_px,
            settings.max_pixels,
            request.options.quality,
            request.options.watermark,
        )
    return {
        "source": {
            "format": rendering.source.format,
            "width": rendering.source.width,
            "height": rendering.source.height,
        },
        "outputs": [
            {
                "path": f"{ctx.task_id}/{o.name}",
                "format": o.format,
                "size_px": o.size_px,
                "width": o.width,
                "height": o.height,
                "bytes": o.bytes,
            }
            for o in rendering.outputs
        ],
    }
