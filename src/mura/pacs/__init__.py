"""DICOM exchange: the objects a study's results become (SR, Secondary Captures) and the node that
receives studies from a PACS and sends those objects back. Decoding DICOM is `mura.data.dicom`.

Lowest first: results (types) < identity < capture, sr < study; private_files, credentials, tls,
node_settings < spool < delivery < retention, scp < node.
"""
