<?php
/**
 * mimir testbed: install WordPress and fill it from a JSON plan (argv[1]) that mimir derives from the run's seed:
 * the administrator, accounts, pages, posts and approved comments, created through WordPress's own functions so
 * every table, count and cache is what a real site has. Prints one JSON line: what was created.
 */
define( 'WP_INSTALLING', true );
$plan = json_decode( file_get_contents( $argv[1] ), true );
$_SERVER['HTTP_HOST'] = $plan['host'];
$_SERVER['REQUEST_URI'] = '/';
$_SERVER['SERVER_PROTOCOL'] = 'HTTP/1.1';
require '/usr/share/wordpress/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/upgrade.php';

$installed = wp_install( $plan['title'], $plan['admin']['login'], $plan['admin']['email'], false, '', wp_slash( $plan['admin']['password'] ) );
update_option( 'siteurl', $plan['url'] );
update_option( 'home', $plan['url'] );
update_option( 'users_can_register', 1 );
update_option( 'default_role', 'subscriber' );
update_option( 'comment_moderation', 0 );
update_option( 'comment_previously_approved', 0 );
global $wp_rewrite;
$wp_rewrite->set_permalink_structure( '/%year%/%monthnum%/%postname%/' );
$wp_rewrite->flush_rules();

$users = array( (int) $installed['user_id'] );
foreach ( $plan['accounts'] as $account ) {
	$id = wp_insert_user( array(
		'user_login' => $account['login'],
		'user_email' => $account['email'],
		'user_pass'  => $account['password'],
		'role'       => $account['role'],
		'description' => $account['bio'],
	) );
	if ( ! is_wp_error( $id ) ) {
		$users[] = (int) $id;
	}
}
$made = array( 'users' => count( $users ), 'pages' => 0, 'posts' => 0, 'comments' => 0 );
foreach ( array( 'pages' => 'page', 'posts' => 'post' ) as $list => $type ) {
	foreach ( $plan[ $list ] as $item ) {
		$id = wp_insert_post( array(
			'post_type'    => $type,
			'post_status'  => 'publish',
			'post_title'   => $item['title'],
			'post_content' => $item['content'],
			'post_author'  => $users[ $item['author'] % count( $users ) ],
			'post_date'    => $item['date'],
		), true );
		if ( is_wp_error( $id ) ) {
			fwrite( STDERR, $id->get_error_message() . "\n" );
			exit( 1 );
		}
		$made[ $list ]++;
		foreach ( $item['comments'] as $comment ) {
			wp_insert_comment( array(
				'comment_post_ID'  => $id,
				'comment_author'   => $comment['author'],
				'comment_author_email' => $comment['author'] . '@example.org',
				'comment_content'  => $comment['content'],
				'comment_approved' => 1,
				'comment_date'     => $item['date'],
			) );
			$made['comments']++;
		}
	}
}
echo json_encode( $made ), "\n";
