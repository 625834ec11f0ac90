"""Training: synthetic labelled clips, supervised training loops, metrics.

Structured like the torchvision reference scripts, split by job: ``synthetic_data`` builds
datasets, ``supervised`` holds ``train_one_epoch`` / ``evaluate`` / ``train_supervised`` and the
demo recipe, ``metrics`` the F1 family, ``detection_eval`` event-level recall and false alarms.
(The ATCON fine-tuning loop lives beside these modules and reuses them.)
"""
