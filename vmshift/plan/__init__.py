"""vmshift.plan"""
