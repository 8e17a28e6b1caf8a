"""vmshift.convert"""
