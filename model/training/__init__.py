"""Training: one loop for every model of the project, ATCON as a step strategy inside it.

Split by job, in the style of the torchvision reference scripts:

* the loop: ``config`` (``TrainConfig``), ``schedule`` (labelled subset, epoch length, step kinds),
  ``loader`` (``torch.utils.data`` batches), ``augment``, ``steps`` (supervised / ATCON / combined
  steps), ``loop`` (``train_one_epoch``, ``train``), ``validation`` (``evaluate``), ``checkpoints``;
* ATCON: ``atcon`` (the loss around :func:`model.attribution.consistency.consistency`, BatchNorm
  handling, reflect padding);
* data: ``training_data`` (the container), ``sources/`` (reviewed clips, annotated videos, image
  folders and VOC, synthetic ward video), ``synthetic_data``, ``toy_data``;
* measurement: ``metrics``, ``bootstrap``, ``localisation``, ``prediction``, ``detection_eval``;
* users of the loop: ``demo_recipe`` (the shipped demo model), ``finetune`` (the server's jobs),
  ``experiment*`` (baseline vs ATCON vs control, pre-registered test).
"""
