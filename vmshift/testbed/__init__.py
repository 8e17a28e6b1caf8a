"""vmshift.testbed"""
