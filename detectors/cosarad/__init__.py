"""COSARAD (Tarvo et al.): spatially-aware 3D anomaly detection on part point clouds.

Registration, patches, location-specific memory banks and the FPFH features need numpy and
Open3D; the contrastive extractor (PointNet++ with multi-scale grouping and the paper's
contrastive head) needs torch and lives in ``pointnet2`` / ``contrastive``, imported only
when a contrastive extractor is used.
"""
