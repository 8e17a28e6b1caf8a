"""vmshift.migrate"""
