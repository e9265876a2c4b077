<?php
/**
 * mimir testbed: the site answers on a NodePort, which WordPress's canonical redirect would "correct" into a
 * redirect loop; visitors get the page they asked for.
 */
remove_action( 'template_redirect', 'redirect_canonical' );
