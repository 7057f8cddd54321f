"""Local-feature matching, shared by the catalogue, the whale ranking and the page: no training, no TensorFlow.

- `features`: a photo prepared as its run prepares it (wide whale photos turned, right views mirrored), reduced to a
  working size, and its keypoints and descriptors (RootSIFT from OpenCV's SIFT), kept compactly (`FeatureSet`).
- `matching`: one pair's score: mutual nearest neighbours passing Lowe's ratio test, verified by a robust
  geometric model (a partial affine transform, or OpenCV's USAC/MAGSAC homography); the score is the count of
  verified inliers.
- `calibration`: a score mapped to P(same individual) by a strictly increasing curve fitted on labelled pairs,
  and the weighted mean of calibrated scores (fusion, as WildFusion fuses its matchers).
- `vocabulary`: a training-free global descriptor learnt from a catalogue's own features (VLAD over a k-means
  vocabulary of RootSIFT), the shortlist of a catalogue that has no trained model.
- `drawing`: why two photos match: both side by side with the verified matches drawn as lines.
"""
