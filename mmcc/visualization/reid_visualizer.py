from typing import List, Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
from mmengine.dist import master_only
from mmengine.visualization import Visualizer

from mmcc.registry import VISUALIZERS

Image = Union[np.ndarray, str]
Color = Tuple[int, int, int]


@VISUALIZERS.register_module()
class ReIDVisualizer(Visualizer):
    """MMEngine's visualizer with the pictures of person re-ID.

    - :meth:`add_ranked_list`: a query and its top-k gallery images in one
      row, as torchreid's ``visrank`` draws them: a border green for a
      correct match (same identity) and red for a wrong one, the distance
      under each gallery image. The picture goes to every configured
      backend (``LocalVisBackend`` PNGs, TensorBoard...) through
      :meth:`add_image`, and optionally to a file.
    - :meth:`compose_grid`: the image grid it is made of, e.g. a data set's
      identities by camera (``tools/analysis_tools/browse_dataset.py``).

    Every image is resized to ``cell_size`` and framed by a border of
    ``border`` pixels inside a cell of ``cell_width`` x ``cell_height``
    pixels: ``pad`` pixels of white around the framed image and a caption
    strip of ``caption_height`` pixels under it. Captions are drawn by
    :meth:`draw_texts` (matplotlib); images and borders are copied pixel
    for pixel.

    Args:
        name (str): Name of the instance. Defaults to 'visualizer'.
        cell_size (tuple[int, int]): (H, W) every image is resized to.
            Defaults to (128, 64), the demo's test resolution.
        border (int): Border width in pixels. Defaults to 4.
        pad (int): White margin around each framed image. Defaults to 3.
        caption_height (int): Height of the caption strip under each
            image; room for one line at the default font size. Defaults
            to 16.
        font_size (int): Caption font size in pixels. Defaults to 11.
        query_gap (int): Extra white columns between the query and its
            ranked gallery images. Defaults to 12.
        **kwargs: The arguments of
            :class:`mmengine.visualization.Visualizer` (``vis_backends``,
            ``save_dir``...).

    Examples:
        >>> visualizer = dict(type='ReIDVisualizer',
        ...                   vis_backends=[dict(type='LocalVisBackend')])
    """
    background: Color = (255, 255, 255)
    match_color: Color = (0, 255, 0)
    mismatch_color: Color = (255, 0, 0)
    query_color: Color = (0, 0, 0)

    def __init__(self,
                 name: str = 'visualizer',
                 cell_size: Tuple[int, int] = (128, 64),
                 border: int = 4,
                 pad: int = 3,
                 caption_height: int = 16,
                 font_size: int = 11,
                 query_gap: int = 12,
                 **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.cell_size = (int(cell_size[0]), int(cell_size[1]))
        self.border = int(border)
        self.pad = int(pad)
        self.caption_height = int(caption_height)
        self.font_size = font_size
        self.query_gap = int(query_gap)

    @property
    def cell_width(self) -> int:
        """Width in pixels of one cell of a grid."""
        return self.cell_size[1] + 2 * (self.border + self.pad)

    @property
    def cell_height(self) -> int:
        """Height in pixels of one cell of a grid, caption included."""
        return (self.cell_size[0] + 2 * (self.border + self.pad) +
                self.caption_height)

    def cell_origin(self, row: int, col: int, gap: int = 0) -> Tuple[int, int]:
        """(y, x) of the top-left corner of a cell's border.

        Args:
            row (int): Row of the cell.
            col (int): Column of the cell.
            gap (int): Extra columns after the first column, as in
                :meth:`compose_grid`.
        """
        x = col * self.cell_width + (gap if col > 0 else 0) + self.pad
        return row * self.cell_height + self.pad, x

    def _load(self, image: Image) -> np.ndarray:
        if isinstance(image, str):
            image = mmcv.imread(image, channel_order='rgb')
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        height, width = self.cell_size
        return mmcv.imresize(image[..., :3], (width, height)).astype(np.uint8)

    @master_only
    def compose_grid(self,
                     images: Sequence[Sequence[Optional[Image]]],
                     captions: Optional[Sequence[Sequence[str]]] = None,
                     border_colors: Optional[Sequence[Sequence[
                         Optional[Color]]]] = None,
                     gap: int = 0) -> np.ndarray:
        """Draw images in a grid of cells, each with a border and caption.

        Args:
            images (list[list[np.ndarray | str | None]]): Rows of RGB images
                or image paths; None leaves a cell empty. Rows may differ in
                length: the grid is as wide as the longest.
            captions (list[list[str]], optional): A caption per image, in
                the same layout. Defaults to none.
            border_colors (list[list[tuple | None]], optional): An RGB
                border colour per image, None for none. Defaults to none.
            gap (int): Extra white columns after the first column.
                Defaults to 0.

        Returns:
            np.ndarray: The RGB grid, ``len(images) * cell_height`` x
            ``max_len * cell_width + gap`` pixels; also the visualizer's
            current image.
        """
        num_cols = max((len(row) for row in images), default=0)
        canvas = np.empty(
            (len(images) * self.cell_height, num_cols * self.cell_width +
             (gap if num_cols > 1 else 0), 3),
            dtype=np.uint8)
        canvas[...] = self.background
        height, width = self.cell_size
        b = self.border
        texts, positions = [], []
        for r, row in enumerate(images):
            for c, image in enumerate(row):
                if image is None:
                    continue
                y, x = self.cell_origin(r, c, gap)
                color = border_colors[r][c] if border_colors else None
                if color is not None:
                    canvas[y:y + height + 2 * b, x:x + width + 2 * b] = color
                canvas[y + b:y + b + height,
                       x + b:x + b + width] = self._load(image)
                if captions and captions[r][c]:
                    texts.append(captions[r][c])
                    positions.append(
                        [x + b + width / 2, y + height + 2 * b + self.pad])
        self.set_image(canvas)
        if texts:
            self.draw_texts(
                texts,
                np.array(positions),
                colors='black',
                # draw_texts sizes fonts in points
                font_sizes=self.font_size * 72 / self.dpi,
                vertical_alignments='top',
                horizontal_alignments='center')
        return self.get_image()

    @master_only
    def add_ranked_list(self,
                        name: str,
                        query_img: Image,
                        gallery_imgs: Sequence[Image],
                        matches: Sequence[bool],
                        distances: Sequence[float],
                        step: int = 0,
                        query_caption: str = 'query',
                        out_file: Optional[str] = None) -> np.ndarray:
        """Draw a query's ranked list and hand it to every backend.

        The row is the query (black border) and then its gallery images,
        nearest first, with a green (match) or red (mismatch) border and
        the distance under each: ``len(gallery_imgs) + 1`` cells plus
        ``query_gap`` pixels wide.

        Args:
            name (str): The image's name for the backends (e.g. the
                ``LocalVisBackend`` writes ``{name}_{step}.png``).
            query_img (np.ndarray | str): RGB query image or its path.
            gallery_imgs (list[np.ndarray | str]): The ranked gallery
                images or their paths, nearest first.
            matches (Sequence[bool]): Whether each gallery image has the
                query's identity.
            distances (Sequence[float]): Each gallery image's distance to
                the query.
            step (int): The backends' global step, e.g. the query's index.
                Defaults to 0.
            query_caption (str): Caption under the query. Defaults to
                'query'.
            out_file (str, optional): Also write the picture to this file.

        Returns:
            np.ndarray: The RGB picture.
        """
        assert len(gallery_imgs) == len(matches) == len(distances), \
            'gallery_imgs, matches and distances must have the same length'
        colors: List[Optional[Color]] = [self.query_color] + [
            self.match_color if match else self.mismatch_color
            for match in matches
        ]
        # 3 decimals, or 3 significant digits for tiny distances (a
        # collapsed model), which would all print as 0.000
        captions = [query_caption] + [
            f'{float(d):.3f}' if d == 0 or abs(d) >= 0.01 else f'{d:.2e}'
            for d in distances
        ]
        image = self.compose_grid([[query_img, *gallery_imgs]], [captions],
                                  [colors],
                                  gap=self.query_gap)
        self.add_image(name, image, step)
        if out_file is not None:
            mmcv.imwrite(mmcv.rgb2bgr(image), out_file)
        return image
