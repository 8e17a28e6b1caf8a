"""vmshift.drivers"""
