"""Occupancy models.

- :mod:`.prior`: the per-voxel prior, the floor every learned model must beat.
- :mod:`.config`: typed model/training configs from ``config/models/*.yaml``.
- :mod:`.backbone`, :mod:`.lss`, :mod:`.lidar`, :mod:`.heads`, :mod:`.cascade`: the pieces.
- :mod:`.bevformer_sca`: BEVFormer's spatial cross-attention and learnable BEV queries.
- :mod:`.bevformer`: the BEVFormer occupancy network (``name: bevformer``): TSA over the
  ego-motion-aligned previous BEV, SCA, FFN; z-embedding or channel-to-height decoder.
- :mod:`.hbevocc`: HBEVOcc (``name: hbevocc``): LSS and BEVFormer SCA BEVs fused, height-aware
  deformable attention (HADA) on the BEVFormer BEV, channel-to-height head.
- :mod:`.pretrained`: ImageNet ResNet weights (torchvision / timm files) into the backbone.
- :mod:`.occnet`: camera / LiDAR / fusion networks, ``MODELS`` and ``build_model(cfg)``.
- :mod:`.predictor`: ``load_predictor(config, checkpoint)`` -> ``.predict(SensorFrame)``.
"""
