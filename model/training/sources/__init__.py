"""Sources of :class:`~model.training.training_data.TrainingData`, one module per kind of data.

(a) :mod:`~model.training.sources.reviewed`: :class:`ReviewedClip` + :func:`reviewed_clips`: the
    server adapts its database rows (reviewed events, other clips as the unlabelled pool) to plain
    records with a frame loader or a video path and frame times;
(b) :mod:`~model.training.sources.annotated`: :func:`annotated_videos`: videos plus a CSV
    ``path,start,end,label`` (optionally ``x0,y0,x1,y1`` in video pixels), cut into clips exactly
    as the worker cuts them;
(c) :mod:`~model.training.sources.images`: :func:`image_folder` (``root/<class>/*.png|jpg``,
    single-label) and :func:`voc` (PASCAL VOC ``JPEGImages/`` + ``Annotations/*.xml``,
    multi-label, boxes);
(d) :mod:`~model.training.sources.synthetic`: :func:`synthetic_ward`: clips of synthetic ward
    video (``ingest.synthetic``) with per-frame ground-truth boxes, via
    :mod:`model.training.synthetic_data`.
"""

from model.training.sources.annotated import annotated_videos
from model.training.sources.images import IMAGE_SUFFIXES, image_folder, voc
from model.training.sources.reviewed import ReviewedClip, labels_from_review, reviewed_clips
from model.training.sources.synthetic import synthetic_ward

__all__ = [
    "IMAGE_SUFFIXES",
    "ReviewedClip",
    "annotated_videos",
    "image_folder",
    "labels_from_review",
    "reviewed_clips",
    "synthetic_ward",
    "voc",
]
