"""Models: the backbone registry (`backbones`), the embedding head's layers — GeM, the neck, ArcFace — (`layers`) and
the builder of the training, prediction and embedding models (`factory`)."""
